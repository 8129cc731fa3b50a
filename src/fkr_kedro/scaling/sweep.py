"""The scaling sweep: models of several sizes, each quantized at many points and evaluated
on every task, resumable point by point.

* :func:`train_or_reuse` trains one model size into a model directory, unless the directory
  already holds a model trained with the same shape, training settings and corpus
  (``training.json`` records them).
* :func:`design_points` lays out the GPTQ points of one model: every bit width at the centre
  group size and calibration size, then each group size and each calibration size at chosen
  bit widths (one factor at a time around a centre, plus a full-precision reference).
* :func:`run_sweep` runs each point through :func:`~fkr_kedro.quantization.api.quantize`,
  :func:`~fkr_kedro.quantization.api.load_quantized` and
  :func:`~fkr_kedro.analysis.recall.score_prompts`, reads B_eff from the stored format
  (:func:`~fkr_kedro.quantization.footprint.footprint`), and writes the result to a
  :class:`PointCache`: one JSON file per point, written atomically, keyed by a hash of the
  point's spec, the model's weights, the calibration texts and the evaluation prompts. A
  point whose result is there under the same key is not recomputed, so an interrupted sweep
  resumes where it stopped and separate processes can share the work (one per model size).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..analysis.recall import score_prompts
from ..knowledge.chance import chance_rate
from ..modeling.exposures import exposures_per_fact
from ..modeling.load import CausalLM
from ..modeling.storage import (
    is_model_directory, new_staging_directory, replace_with_staging, staged_file, write_manifest,
)
from ..modeling.tokenizer import build_word_tokenizer
from ..modeling.train import (
    ModelShape,
    TrainConfig,
    non_embedding_parameters,
    train_causal_lm,
    training_fingerprint,
)
from ..quantization.api import load_quantized, quantize
from ..quantization.footprint import Footprint, footprint
from ..quantization.variants import VariantSpec, variant_name

log = logging.getLogger(__name__)

TRAINING_FILE = "training.json"


@dataclass(frozen=True)
class TrainedModel:
    """A trained model size: its directory and its training record."""

    path: Path
    record: dict  # training.json: fingerprint, n_params, final_loss, seconds


# --- tasks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """Prompts with their answers (and accepted aliases) and the task's chance rate."""

    name: str
    tier: str  # "KM" (memorization) or "KU" (utilization)
    prompts: tuple[str, ...]
    answers: tuple[str, ...]
    aliases: tuple[tuple[str, ...], ...]
    chance: float

    def fingerprint(self) -> str:
        payload = json.dumps([self.name, self.prompts, self.answers, self.aliases, self.chance])
        return hashlib.sha256(payload.encode()).hexdigest()


def task_from_table(name: str, tier: str, table: pd.DataFrame, prompt: str, answer: str, aliases: str, chance: float) -> Task:
    if table.empty:
        raise ValueError(f"task {name!r} has no prompts: check the evaluation sample and the task's split")
    return Task(
        name=name,
        tier=tier,
        prompts=tuple(table[prompt]),
        answers=tuple(table[answer]),
        aliases=tuple(tuple(a) for a in table[aliases]),
        chance=float(chance),
    )


def scaling_tasks(one_hop: pd.DataFrame, two_hop: pd.DataFrame, in_context: pd.DataFrame) -> list[Task]:
    """KM: one-hop recall. KU: latent composition of held-out two-hop chains, and in-context
    inference over held-out bridges. Each with its chance rate (best constant guess)."""
    held_out = two_hop[two_hop["split"] == "held_out"]
    new_bridges = in_context[in_context["split"] == "held_out_bridge"]
    return [
        task_from_table("km", "KM", one_hop, "prompt", "object", "object_aliases", chance_rate(one_hop, "relation", "object")),
        task_from_table(
            "ku_two_hop", "KU", held_out, "prompt_two_hop", "e3", "e3_aliases",
            chance_rate(two_hop, "composition", "e3", rows=held_out) if len(held_out) else 0.0,
        ),
        task_from_table(
            "ku_in_context", "KU", new_bridges, "prompt", "answer", "answer_aliases",
            chance_rate(new_bridges, "composition", "answer") if len(new_bridges) else 0.0,
        ),
    ]


def evaluate_tasks(lm: CausalLM, tasks: Sequence[Task], batch_size: int = 256) -> dict[str, dict[str, float]]:
    """Greedy whole-name accuracy of each task (the same scoring as the evaluate pipeline;
    teacher-forced, whose verdicts equal generation's on the word-tokenized world)."""
    out = {}
    for task in tasks:
        scored = score_prompts(
            lm.model, lm.tokenizer, list(task.prompts), list(task.answers), [list(a) for a in task.aliases],
            batch_size=batch_size, mode="teacher_forced",
        )
        out[task.name] = {
            "accuracy": float(scored["correct"].mean()),
            "answer_logprob": float(scored["answer_logprob"].mean()),
            "n_prompts": float(len(scored)),
        }
    return out


# --- models --------------------------------------------------------------------------------


def train_or_reuse(
    model_dir: Path, corpus: Sequence[str], shape: ModelShape, training: TrainConfig, progress: bool = True
) -> dict:
    """Train a model of ``shape`` on ``corpus`` into ``model_dir`` (atomically), unless it is
    already there from the same shape, training settings and corpus. Returns the training
    record (``training.json``) with ``reused`` telling which happened."""
    trained = train_or_keep(model_dir, corpus, shape, training, progress)
    if not trained.kept:
        replace_with_staging(trained.path, model_dir, manifest=False)
    return {**trained.record, "reused": trained.kept}


@dataclass(frozen=True)
class TrainedDirectory:
    """What :func:`train_or_keep` hands its saver: the stored model, kept (``kept``), or a
    staging folder beside it holding the new model with its manifest, to move into place."""

    path: Path
    kept: bool
    record: dict  # training.json


def train_or_keep(
    model_dir: Path, corpus: Sequence[str], shape: ModelShape, training: TrainConfig, progress: bool = True
) -> TrainedDirectory:
    """Keep the model in ``model_dir`` when it was trained with the same shape, settings and
    corpus (:func:`training_fingerprint`); else train one into a new staging folder beside
    ``model_dir`` (the caller moves it into place:
    :func:`~fkr_kedro.modeling.storage.replace_with_staging`)."""
    model_dir = Path(model_dir)
    fingerprint = training_fingerprint(corpus, shape, training)
    record_path = model_dir / TRAINING_FILE
    if is_model_directory(model_dir) and record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("fingerprint") == fingerprint:
            log.info("Model %s is already trained with the same shape, settings and corpus; kept", model_dir)
            return TrainedDirectory(model_dir, True, record)
    statements = list(corpus)
    tokenizer = build_word_tokenizer(statements)
    model, history = train_causal_lm(statements, tokenizer, shape, training, progress=progress)
    record = {
        "fingerprint": fingerprint,
        "n_params": non_embedding_parameters(model),
        "final_loss": float(history[-1]["loss"]),
        "seconds": float(history[-1]["seconds"]),
        "n_statements": len(statements),
        "exposures_per_fact": exposures_per_fact(training.steps, training.batch_size, len(statements)),
        # The training curve (smoothed loss every log_every steps), to see convergence.
        "history": [{k: float(v) for k, v in h.items()} for h in history],
    }
    staging = new_staging_directory(model_dir)
    try:
        CausalLM(model, tokenizer).save(staging)
        (staging / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n")
        write_manifest(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "Trained %s: %d non-embedding parameters, final loss %.3f, %.0f s",
        model_dir.name, record["n_params"], record["final_loss"], record["seconds"],
    )
    return TrainedDirectory(staging, False, record)


def training_summary(records: dict[tuple[str, int], dict]) -> pd.DataFrame:
    """One row per (size, training seed) from its training record: n_params, steps, exposures per statement,
    seconds, final loss, and ``loss_drop_last_fifth``: the relative fall of the (smoothed)
    loss over the last fifth of training, near 0 once the curve has flattened."""
    rows = []
    for (size, seed), record in records.items():
        history = pd.DataFrame(record.get("history", []))
        drop = float("nan")
        if len(history) >= 5:
            last = history["step"].iloc[-1]
            before = history.loc[history["step"] <= 0.8 * last, "loss"].iloc[-1]
            drop = float((before - history["loss"].iloc[-1]) / before)
        rows.append({
            "model": size,
            "seed": seed,
            "n_params": int(record["n_params"]),
            "steps": int(record["fingerprint"]["training"]["steps"]),
            "exposures_per_fact": float(record.get("exposures_per_fact", float("nan"))),
            "seconds": float(record["seconds"]),
            "final_loss": float(record["final_loss"]),
            "loss_drop_last_fifth": drop,
        })
    return pd.DataFrame(rows).sort_values(["n_params", "seed"], ignore_index=True)


def weights_sha256(model_dir: Path) -> str:
    """Hash of the content of every weight file of a model directory."""
    digest = hashlib.sha256()
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weight files in {model_dir}")
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# --- points --------------------------------------------------------------------------------


def point_spec(method: str, bits: int, group_size: int, calibration_size: int, device: str = "auto") -> VariantSpec:
    name = f"{variant_name(method, bits, group_size)}_c{calibration_size}"
    return VariantSpec(
        name=name, method=method, bits=bits, group_size=group_size, calibration_size=calibration_size, device=device
    )


def design_points(
    bits: Iterable[int],
    group_sizes: Iterable[int],
    calibration_sizes: Iterable[int],
    group_size_bits: Iterable[int],
    calibration_bits: Iterable[int],
    centre_group_size: int,
    centre_calibration_size: int,
    method: str = "gptq",
    device: str = "auto",
    include_reference: bool = True,
) -> list[VariantSpec]:
    """One factor at a time around the centre: every bit width at the centre group and
    calibration sizes; every group size at each of ``group_size_bits``; every calibration
    size at each of ``calibration_bits``; and a full-precision reference (not part of the
    fit). Duplicates are dropped."""
    combos = [(b, centre_group_size, centre_calibration_size) for b in bits]
    combos += [(b, g, centre_calibration_size) for b in group_size_bits for g in group_sizes]
    combos += [(b, centre_group_size, c) for b in calibration_bits for c in calibration_sizes]
    specs = [VariantSpec(name="fp", method="fp", device=device)] if include_reference else []
    seen: set[str] = set()
    for b, g, c in combos:
        spec = point_spec(method, b, g, c, device)
        if spec.name not in seen:
            seen.add(spec.name)
            specs.append(spec)
    return specs


class PointCache:
    """One JSON file per point in ``directory``; a result counts only under the same key."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def get(self, name: str, key: str) -> dict | None:
        path = self._path(name)
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        return record if record.get("key") == key else None

    def put(self, name: str, key: str, record: dict) -> None:
        """Write atomically: a temporary file beside the target, then a rename."""
        with staged_file(self._path(name)) as staging:
            staging.write_text(json.dumps({**record, "key": key}, indent=2))


def point_key(spec: VariantSpec, model_sha256: str, calibration_texts: Sequence[str], tasks: Sequence[Task]) -> str:
    """Everything that determines a point's result (``device`` aside)."""
    payload = {
        "spec": spec.model_dump(exclude={"device"}),
        "model_sha256": model_sha256,
        "calibration_sha256": hashlib.sha256("\n".join(calibration_texts[: spec.calibration_size]).encode()).hexdigest()
        if spec.method != "fp" else None,
        "tasks": [t.fingerprint() for t in tasks],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class SweepResult:
    table: pd.DataFrame  # one row per point and task
    computed: list[str]  # point names computed in this call
    reused: list[str]  # point names read from the cache


def run_sweep(
    model_dir: Path,
    points: Sequence[VariantSpec],
    calibration_texts: Sequence[str],
    tasks: Sequence[Task],
    cache: PointCache,
    model: str = "",
    batch_size: int = 256,
    progress: bool = True,
) -> SweepResult:
    """Quantize and evaluate every point not already in ``cache``; return every point's rows."""
    model_dir = Path(model_dir)
    model_sha = weights_sha256(model_dir)
    computed, reused, records = [], [], []
    bar = tqdm(points, desc=f"sweep {model or model_dir.name}", disable=not progress)
    for spec in bar:
        bar.set_postfix(point=spec.name)
        key = point_key(spec, model_sha, calibration_texts, tasks)
        record = cache.get(spec.name, key)
        if record is None:
            record = _compute_point(model_dir, spec, calibration_texts, tasks, batch_size)
            cache.put(spec.name, key, record)
            computed.append(spec.name)
            log.info(
                "%s %s: %s (%.1f s)", model or model_dir.name, spec.name,
                ", ".join(f"{t} {r['accuracy']:.3f}" for t, r in record["results"].items()), record["seconds"],
            )
        else:
            reused.append(spec.name)
        records.append(record)
    if reused:
        log.info("%s: %d points reused from %s, %d computed", model or model_dir.name, len(reused), cache.directory, len(computed))
    return SweepResult(_tidy(records, tasks, model), computed, reused)


@contextmanager
def scratch_variant(model_dir: Path, spec: VariantSpec, calibration_texts: Sequence[str]) -> Iterator[tuple[CausalLM, Footprint]]:
    """A sweep point's variant: quantized into a temporary directory, loaded, and yielded with
    its footprint; the directory is removed afterwards (sweeps keep only the measurements)."""
    with tempfile.TemporaryDirectory(prefix=f"{spec.name}.") as work:
        variant_dir = Path(work) / spec.name
        quantize(model_dir, spec, list(calibration_texts), variant_dir)
        measured = footprint(variant_dir)
        lm = load_quantized(variant_dir, device=spec.device)
        try:
            yield lm, measured
        finally:
            del lm


def _compute_point(
    model_dir: Path, spec: VariantSpec, calibration_texts: Sequence[str], tasks: Sequence[Task], batch_size: int
) -> dict:
    start = time.perf_counter()
    with scratch_variant(model_dir, spec, calibration_texts) as (lm, measured):
        b_eff = measured.effective_bits
        results = evaluate_tasks(lm, tasks, batch_size)
    return {
        "point": spec.model_dump(exclude={"device"}),
        "b_eff": b_eff,
        "results": results,
        "seconds": time.perf_counter() - start,
    }


def _tidy(records: Sequence[dict], tasks: Sequence[Task], model: str) -> pd.DataFrame:
    tiers = {t.name: (t.tier, t.chance) for t in tasks}
    rows = []
    for record in records:
        point = record["point"]
        for task, result in record["results"].items():
            tier, chance = tiers[task]
            rows.append(
                {
                    "model": model,
                    "point": point["name"],
                    "method": point["method"],
                    "bits": point["bits"],
                    "b_eff": record["b_eff"],
                    "group_size": point["group_size"],
                    "calibration_size": point["calibration_size"] if point["method"] != "fp" else None,
                    "task": task,
                    "tier": tier,
                    "accuracy": result["accuracy"],
                    "answer_logprob": result["answer_logprob"],
                    "n_prompts": int(result["n_prompts"]),
                    "chance": chance,
                    "seconds": record["seconds"],
                }
            )
    return pd.DataFrame(rows)
