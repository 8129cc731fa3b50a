"""Typed settings of the capacity study (``capacity`` in parameters_capacity.yml), checked
before anything is trained: a bad key, too few loads or sizes, a world too small for a load,
or a variant a model size cannot take fails here, naming the key and the fix."""

from __future__ import annotations

from dataclasses import asdict, replace

from pydantic import ConfigDict, Field, NonNegativeInt, PositiveInt, field_validator, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from ..knowledge.world import WorldConfig
from ..modeling.settings import Strict as _Strict
from ..modeling.train import TrainConfig
from ..quantization.methods import METHODS
from ..quantization.variants import VariantSpec, validate_variants
from ..scaling.config import SizeSettings, check_sizes
from .checkpoints import CheckpointSettings



@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class CapacityTraining(TrainConfig):
    """The training loop (:class:`TrainConfig`) without its length: steps follow from the
    exposures per fact (``capacity.exposures``). Its other defaults: 100 warmup steps, a log
    line every 500 steps."""

    steps: int | None = None
    warmup_steps: NonNegativeInt = 100
    log_every: PositiveInt = 500

    def __post_init__(self) -> None:
        if self.steps is not None:
            raise ValueError("capacity.training.steps: the steps follow from capacity.exposures; remove the key")

    def for_steps(self, steps: int) -> TrainConfig:
        """These settings as a :class:`TrainConfig` of ``steps`` optimizer steps."""
        return TrainConfig(**{**asdict(self), "steps": steps})


class CapacitySettings(_Strict):
    sizes: dict[str, SizeSettings]
    # Knowledge loads: people in the world (each adds a birth city and an employer); the
    # other entity counts come from ``world``.
    people: list[int]
    world: WorldConfig = WorldConfig()
    exposures: list[float] = [100.0, 400.0]  # expected exposures of each fact's statement
    training: CapacityTraining = CapacityTraining()
    variants: dict[str, dict]
    calibration_size: int = Field(128, ge=1)
    calibration_seed: int = 0
    device: str = "cpu"
    batch_size: int = Field(256, gt=0)  # evaluation batch
    # Quantization damage along training (`kedro run --pipeline=checkpoints`); None: not configured.
    checkpoints: CheckpointSettings | None = None

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, sizes: dict[str, SizeSettings]) -> dict[str, SizeSettings]:
        return check_sizes(sizes, "capacity.sizes", "the capacity fit compares sizes")

    @field_validator("people")
    @classmethod
    def _people(cls, people: list[int]) -> list[int]:
        if len(people) < 2 or sorted(set(people)) != people or people[0] < 1:
            raise ValueError(f"capacity.people must list at least two increasing loads >= 1; got {people}")
        return people

    @field_validator("exposures")
    @classmethod
    def _exposures(cls, exposures: list[float]) -> list[float]:
        if not exposures or any(e <= 0 for e in exposures):
            raise ValueError(f"capacity.exposures must list positive exposures per fact; got {exposures}")
        return exposures

    @model_validator(mode="after")
    def _runnable(self) -> CapacitySettings:
        names = self.world.n_first_names * self.world.n_last_names
        if self.people[-1] > names:
            raise ValueError(
                f"capacity.people: {self.people[-1]} people need n_first_names * n_last_names >= that "
                f"(capacity.world gives {names}): raise the name pools"
            )
        if "fp" not in self.variants:
            raise ValueError("capacity.variants must include fp (the full-precision reference)")
        specs = self.specs()
        for name, size in self.sizes.items():
            try:
                validate_variants(specs, [size.hidden_size, size.intermediate_size])
            except ValueError as error:
                raise ValueError(f"capacity.sizes.{name}: {error}") from None
        return self

    def specs(self) -> list[VariantSpec]:
        specs = []
        for name, spec in self.variants.items():
            method = METHODS.get(spec.get("method"))
            calibration = {"calibration_size": self.calibration_size} if method is not None and method.calibrated else {}
            specs.append(VariantSpec(**{"name": name, **calibration, "device": self.device, **spec}))
        return specs

    def world_for(self, people: int) -> WorldConfig:
        return replace(self.world, n_people=people)


def namespace(size: str) -> str:
    """The Kedro namespace of one model size's sweep (``kedro run --namespaces=capacity_<size>``)."""
    return f"capacity_{size}"
