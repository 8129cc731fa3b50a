"""Quantization damage along training: checkpoints of one training run (per seed), each
quantized into a few formats, and what each format loses against its checkpoint in full
precision: one-hop accuracy, held-out latent composition and stored knowledge bits.

Checkpoints are ordinary model directories (safetensors, config, tokenizer) written by the
training loop's checkpoint callback (:func:`~fkr_kedro.modeling.train.train_causal_lm`), so
every quantizer and loader takes them as it takes the trained base model. Every point is
cached (:class:`~fkr_kedro.scaling.sweep.PointCache`), so the study resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from scipy import stats
from tqdm.auto import tqdm

from ..analysis.knowledge_bits import KnowledgeBits, bits_by_relation
from ..analysis.recall import score_prompts
from ..knowledge.world import WorldConfig, generate_world
from ..modeling.load import CausalLM
from ..modeling.settings import Strict
from ..modeling.storage import is_model_directory, staged_directory
from ..modeling.tokenizer import build_word_tokenizer
from ..modeling.train import TrainConfig, train_causal_lm
from ..quantization.calibration import calibration_texts
from ..quantization.variants import VariantSpec
from ..scaling.config import SizeSettings
from ..scaling.sweep import PointCache, Task, point_key, scratch_variant, weights_sha256

log = logging.getLogger(__name__)

DONE_FILE = "checkpoints.json"


class CheckpointSettings(Strict):
    """The damage-along-training study (``capacity.checkpoints``)."""

    size: SizeSettings
    world: WorldConfig = WorldConfig()
    training: TrainConfig = TrainConfig()
    steps: list[int]  # checkpoint steps (1-based optimizer steps), the last one <= training.steps
    seeds: list[int] = [0, 1, 2]  # world and training seed
    variants: dict[str, dict]
    calibration_size: int = Field(128, ge=1)
    device: str = "cpu"
    batch_size: int = Field(256, gt=0)
    confidence: float = Field(0.9, gt=0, lt=1)

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[int]) -> list[int]:
        if len(steps) < 2 or sorted(set(steps)) != steps or steps[0] < 1:
            raise ValueError(f"capacity.checkpoints.steps must list at least two increasing steps >= 1; got {steps}")
        return steps

    def specs(self) -> list[VariantSpec]:
        from ..quantization.methods import METHODS

        specs = [VariantSpec(name="fp", method="fp", device=self.device)]
        for name, spec in self.variants.items():
            calibrated = METHODS[spec["method"]].calibrated if spec.get("method") in METHODS else False
            extra = {"calibration_size": self.calibration_size} if calibrated else {}
            specs.append(VariantSpec(**{"name": name, **extra, "device": self.device, **spec}))
        return specs


def train_checkpoints(run_dir: Path, corpus: list[str], settings: CheckpointSettings, seed: int, progress: bool = True) -> list[Path]:
    """Train one run with checkpoints at ``settings.steps`` (each a model directory
    ``step_<n>``), unless a finished run with the same settings is already in ``run_dir``."""
    run_dir = Path(run_dir)
    training = replace(settings.training, seed=seed)
    fingerprint = {"shape": asdict(settings.size), "training": asdict(training), "steps": settings.steps,
                   "corpus": len(corpus), "corpus_head": corpus[:3]}
    done = run_dir / DONE_FILE
    dirs = [run_dir / f"step_{s:06d}" for s in settings.steps]
    if done.exists() and json.loads(done.read_text()) == fingerprint and all(map(is_model_directory, dirs)):
        return dirs
    if settings.steps[-1] > training.steps:
        raise ValueError(f"capacity.checkpoints.steps: {settings.steps[-1]} is past training.steps {training.steps}")
    tokenizer = build_word_tokenizer(corpus)

    def save(step: int, model) -> None:
        with staged_directory(run_dir / f"step_{step:06d}") as staging:
            CausalLM(model, tokenizer).save(staging)

    train_causal_lm(corpus, tokenizer, settings.size.shape(), training, progress=progress, checkpoint=save,
                    checkpoint_steps=set(settings.steps))
    done.write_text(json.dumps(fingerprint))
    return dirs


def run_checkpoint_study(settings: CheckpointSettings, root: Path, progress: bool = True) -> pd.DataFrame:
    """Per seed, checkpoint and format: one-hop accuracy (every fact), held-out composition
    accuracy, stored bits. One row per point."""
    rows = []
    for seed in settings.seeds:
        world = generate_world(replace(settings.world, seed=seed))
        facts, two_hop = world.one_hop_table(), world.two_hop_table()
        held_out = two_hop[two_hop["split"] == "held_out"]
        corpus = world.corpus()
        calibration = calibration_texts(corpus, seed)
        dirs = train_checkpoints(Path(root) / f"seed_{seed}", corpus, settings, seed, progress)
        task = Task("facts+held_out", "KM", tuple(facts["prompt"]) + tuple(held_out["prompt_two_hop"]),
                    tuple(facts["object"]) + tuple(held_out["e3"]), (), 0.0)
        for step, model_dir in zip(settings.steps, dirs):
            cache = PointCache(model_dir.parent / f"points_{model_dir.name}")
            sha = weights_sha256(model_dir)
            for spec in tqdm(settings.specs(), desc=f"seed {seed} step {step}", disable=not progress):
                key = point_key(spec, sha, calibration, [task])
                point = cache.get(spec.name, key)
                if point is None:
                    point = _measure(model_dir, spec, calibration, facts, held_out, settings.batch_size)
                    cache.put(spec.name, key, point)
                rows.append({"seed": seed, "step": step, "variant": spec.name, "method": spec.method,
                             **{k: v for k, v in point.items() if k != "key"}})
    return pd.DataFrame(rows)


def _measure(model_dir: Path, spec: VariantSpec, calibration: list[str], facts: pd.DataFrame, held_out: pd.DataFrame,
             batch_size: int) -> dict:
    start = time.perf_counter()
    with scratch_variant(model_dir, spec, calibration) as (lm, fp):
        # Teacher-forced verdicts: equal to generation's on the word-tokenized worlds (docs/performance.md).
        one_hop = score_prompts(lm.model, lm.tokenizer, facts["prompt"].tolist(), facts["object"].tolist(),
                                batch_size=batch_size, mode="teacher_forced")
        composition = score_prompts(lm.model, lm.tokenizer, held_out["prompt_two_hop"].tolist(),
                                    held_out["e3"].tolist(), batch_size=batch_size, mode="teacher_forced")
    # The one-hop scores already hold each fact's teacher-forced log-probability: no second pass.
    scored = facts[["relation", "object"]].reset_index(drop=True).assign(answer_logprob=one_hop["answer_logprob"].to_numpy())
    bits = KnowledgeBits(bits_by_relation(scored), fp.quantized_weights, fp.effective_bits * fp.quantized_weights)
    return {
        "b_eff": fp.effective_bits,
        "one_hop_accuracy": float(one_hop["correct"].mean()),
        "held_out_accuracy": float(composition["correct"].mean()),
        "stored_bits": bits.stored_bits,
        "seconds": time.perf_counter() - start,
    }


MEASURES = ("one_hop_accuracy", "held_out_accuracy", "stored_bits")


def damage_table(points: pd.DataFrame, confidence: float = 0.9) -> pd.DataFrame:
    """Per step, format and measure: the loss against the same checkpoint in full precision
    (fp minus the format; stored bits as a share of fp's), its mean over seeds and a
    Student-t interval (NaN with one seed)."""
    fp = points[points["variant"] == "fp"].set_index(["seed", "step"])
    rows = []
    for (variant, step), part in points[points["variant"] != "fp"].groupby(["variant", "step"], sort=False):
        part = part.set_index(["seed", "step"])
        for measure in MEASURES:
            ref = fp.loc[part.index, measure]
            loss = (ref - part[measure]) / ref.where(ref > 0) if measure == "stored_bits" else ref - part[measure]
            loss = loss.to_numpy(dtype=float)
            n = int(np.isfinite(loss).sum())
            mean = float(np.nanmean(loss)) if n else float("nan")
            half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * np.nanstd(loss, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
            rows.append({"variant": variant, "method": part["method"].iloc[0], "step": step, "measure": measure,
                         "loss_mean": mean, "loss_low": mean - half, "loss_high": mean + half, "seeds": n})
    return pd.DataFrame(rows)


def damage_direction(damage: pd.DataFrame) -> dict:
    """Computed sentences: per format and measure, whether the loss at the last checkpoint is
    above the first one's interval (grows with training, Ouyang et al.'s direction), below it
    (shrinks), or within it."""
    statements = []
    for (variant, measure), part in damage.groupby(["variant", "measure"], sort=False):
        part = part.sort_values("step")
        first, last = part.iloc[0], part.iloc[-1]
        if last["loss_low"] > first["loss_high"]:
            verdict = "grows with training (Ouyang et al.'s direction)"
        elif last["loss_high"] < first["loss_low"]:
            verdict = "shrinks with training (against Ouyang et al.'s direction)"
        else:
            verdict = "does not change beyond the seeds' intervals"
        unit = "share of fp's bits" if measure == "stored_bits" else "points"
        scale = 1 if measure == "stored_bits" else 100
        statements.append(
            f"{variant}, {measure}: loss {scale * first['loss_mean']:.2f} at step {first['step']}, "
            f"{scale * last['loss_mean']:.2f} at step {last['step']} ({unit}); {verdict}."
        )
    return {"statements": statements}
