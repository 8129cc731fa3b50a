"""Typed settings of the scaling study (``scaling`` in parameters), checked before anything
is trained: a bad key, a bit width GPTQ does not take, a group size that does not divide
every model's layer widths, or a calibration size the law's log2 cannot take fails here,
naming the key and the fix."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from pydantic import ConfigDict, Field, PositiveInt, field_validator, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from ..knowledge.utilization import InContextConfig
from ..knowledge.world import WorldConfig
from ..modeling.exposures import steps_for_exposures
from ..modeling.settings import Strict as _Strict
from ..modeling.train import ModelShape, TrainConfig
from ..quantization.methods import METHODS
from ..quantization.variants import VariantSpec, validate_variants
from .sweep import design_points

_NAME = re.compile(r"[A-Za-z0-9_]+")


def check_sizes(sizes: dict, key: str, why: str) -> dict:
    """A sweep's model sizes: at least two (``why``), each named so it can be a namespace."""
    if len(sizes) < 2:
        raise ValueError(f"list at least two model sizes under {key} ({why})")
    for name in sizes:
        if not _NAME.fullmatch(name):
            raise ValueError(f"size name {name!r}: use letters, digits and underscores (it becomes a namespace)")
    return sizes


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class SizeSettings(ModelShape):
    """One model size of a study: a :class:`ModelShape` whose only other default is room for
    96 positions (the studies' statements and two-hop prompts are longer than the default's)."""

    max_position_embeddings: PositiveInt = 96

    def shape(self) -> ModelShape:
        return ModelShape(**dataclasses.asdict(self))


class SweepSettings(_Strict):
    method: str = "gptq"
    bits: list[int] = [2, 3, 4, 8]
    group_sizes: list[int] = [16, 32, 64]
    calibration_sizes: list[int] = [8, 32, 128, 1024]  # the paper's C_b
    group_size_bits: list[int] = [3]  # group sizes vary at these bit widths
    calibration_bits: list[int] = [3, 4]  # calibration sizes vary at these bit widths
    centre_group_size: int = 32
    centre_calibration_size: int = 128
    calibration_seed: int = 0
    device: str = "auto"
    batch_size: int = Field(256, gt=0)

    @field_validator("calibration_sizes")
    @classmethod
    def _log2_positive(cls, sizes: list[int]) -> list[int]:
        if any(c < 2 for c in sizes):
            raise ValueError(f"calibration sizes must be >= 2 (the law takes ln log2 C_b); got {sizes}")
        return sizes

    @model_validator(mode="after")
    def _runnable(self) -> "SweepSettings":
        if self.method not in METHODS or not METHODS[self.method].calibrated:
            raise ValueError(f"method {self.method!r}: the sweep varies calibration size, use a calibrated method (gptq)")
        groups = set(self.group_sizes) | {self.centre_group_size}
        four_bit_groups = groups if 4 in self.group_size_bits else {self.centre_group_size}
        if 4 in set(self.bits) | set(self.group_size_bits) | set(self.calibration_bits) and min(four_bit_groups) < 32:
            # torch's CPU int4 matmul, which GPTQModel 7.0.0 picks for 4-bit weights on CPU.
            raise ValueError(
                f"4-bit points with group size {min(four_bit_groups)} cannot run on the CPU (torch's int4 "
                "kernel takes group sizes 32, 64, 128, 256): vary group sizes below 32 at other bit widths "
                "(group_size_bits) or raise centre_group_size"
            )
        return self


class FitSettings(_Strict):
    exclude_bits: list[int] = [2]  # the paper leaves collapsed 2-bit points out of the fit
    bootstrap: int = Field(1000, ge=50)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    reference_task: str = "km"  # memorization, compared with every utilization task
    # "size": cluster bootstrap over model sizes (and seeds); "point": points resampled as if
    # independent (kept for comparison only: it understates the spread)
    bootstrap_unit: Literal["size", "point"] = "size"
    # A size enters a task's fit only when its full-precision accuracy is at least this many
    # times the task's chance rate (0: every size); e.g. held-out two-hop composition that a
    # small model cannot do at all is left out for that size, counted, not fitted.
    min_reference_over_chance: float = Field(3.0, ge=0)


class ScalingSettings(_Strict):
    sizes: dict[str, SizeSettings]
    # The world the sizes are trained on and evaluated in: a study of its own, so a smaller
    # world than the default study's keeps several sizes within the time budget, and
    # `kedro run --pipeline=scaling` leaves the default study's data alone.
    world: WorldConfig = WorldConfig()
    training: TrainConfig = TrainConfig()  # the same for every size
    # Training seeds (initialisation and batch order): every size is trained once per seed, so
    # the fit's cluster bootstrap resamples seeds within sizes and the spread between seeds is
    # measured. None: one model per size, trained with training.seed.
    seeds: list[int] | None = None
    # When set, every size trains to this many expected exposures of each corpus statement
    # (fkr_kedro.modeling.exposures): training.steps is then computed from the corpus size,
    # so the criterion stays the same when the world or the in-context task changes.
    exposures_per_fact: float | None = Field(None, gt=0)
    sweep: SweepSettings = SweepSettings()
    fit: FitSettings = FitSettings()
    in_context: InContextConfig = InContextConfig()

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, sizes: dict[str, SizeSettings]) -> dict[str, SizeSettings]:
        return check_sizes(sizes, "scaling.sizes", "the law fits an exponent of N")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
            raise ValueError(f"scaling.seeds must list distinct training seeds, e.g. [0, 1]; got {seeds} (null: training.seed only)")
        return seeds

    @model_validator(mode="after")
    def _distinct_namespaces(self) -> "ScalingSettings":
        if len(self.models()) != len(self.sizes) * len(self.training_seeds()):
            raise ValueError(
                "scaling.sizes: a size name ending in _seed<k> collides with another size's seed namespace; rename it"
            )
        return self

    def training_seeds(self) -> list[int]:
        return self.seeds if self.seeds is not None else [self.training.seed]

    def models(self) -> dict[str, tuple[str, int]]:
        """Namespace -> (size, training seed) of every model the study trains, sizes in the
        order given, then seeds."""
        return {
            namespace(size, None if seed == self.training.seed else seed): (size, seed)
            for size in self.sizes for seed in self.training_seeds()
        }

    def training_for(self, n_statements: int, seed: int | None = None) -> TrainConfig:
        """The training settings of every size on a corpus of ``n_statements``, with training
        seed ``seed`` (None: ``training.seed``)."""
        steps = self.training.steps
        if self.exposures_per_fact is not None:
            steps = steps_for_exposures(n_statements, self.training.batch_size, self.exposures_per_fact)
        return dataclasses.replace(self.training, steps=steps, seed=self.training.seed if seed is None else seed)

    def points(self) -> list[VariantSpec]:
        s = self.sweep
        return design_points(
            s.bits, s.group_sizes, s.calibration_sizes, s.group_size_bits, s.calibration_bits,
            s.centre_group_size, s.centre_calibration_size, method=s.method, device=s.device,
        )

    def validate_all(self) -> "ScalingSettings":
        """Every point against every model size (bits, group sizes against layer widths)."""
        points = self.points()
        for name, size in self.sizes.items():
            size.shape()
            try:
                validate_variants(points, [size.hidden_size, size.intermediate_size])
            except ValueError as error:
                raise ValueError(f"scaling.sizes.{name}: {error}") from None
        return self


def namespace(size: str, seed: int | None = None) -> str:
    """``scaling_<size>`` for the model trained with ``training.seed`` (seed None), so its
    directories and caches keep their names when seeds are added; ``scaling_<size>_seed<k>``
    for the other seeds."""
    return f"scaling_{size}" if seed is None else f"scaling_{size}_seed{seed}"
