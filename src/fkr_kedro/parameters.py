"""The study's parameters, typed: one model per ``conf/base/parameters_<pipeline>.yml``.

Every default lives here or in the library class a model composes (``WorldConfig``,
``TrainConfig``, ``CaptureConfig`` ...), never in a node. Every model forbids unknown keys,
and :func:`validate_parameters` checks the whole merged configuration (base, ``--env`` and
``--params``) when the pipelines are built, so a misspelt key or an out-of-range value
stops ``kedro run`` before anything is written, with one error naming the key and the file
that sets it. Nodes receive these objects: Kedro converts ``params:`` inputs from the
nodes' type hints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Field,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .analysis.capture import CaptureConfig
from .analysis.probes import ProbeConfig
from .capacity.config import CapacitySettings
from .knowledge.world import WorldConfig
from .modeling.load import ModelSource
from .modeling.settings import Strict as _Settings
from .modeling.threads import AUTO_MIN_PARAMETERS
from .modeling.train import ModelShape, TrainConfig, TrainingTime
from .reporting.findings import ReportSettings
from .scaling.config import ScalingSettings


# ---------------------------------------------------------------- parameters_data_prep.yml
KnowledgeSource = Literal["synthetic", "world_facts", "lre_twohopfact"]


class EvaluationSample(_Settings):
    """The evaluation prompts: a seeded sample of the source's facts and chains."""

    max_per_relation: PositiveInt = 400  # one-hop facts per relation
    max_per_composition: PositiveInt = 2000  # two-hop chains per composition and split
    seed: int = 0


OneHopSource = Literal["synthetic", "world_facts", "lre", "none"]
TwoHopSource = Literal["synthetic", "world_facts", "twohopfact", "none"]
# What each ``source`` stands for: (one-hop source, two-hop source).
SOURCE_PAIRS: dict[str, tuple[str, str]] = {
    "synthetic": ("synthetic", "synthetic"),
    "world_facts": ("world_facts", "world_facts"),
    "lre_twohopfact": ("lre", "twohopfact"),
}


class KnowledgeSettings(_Settings):
    """Where the evaluation prompts come from: ``source`` names a pair, or ``one_hop`` and
    ``two_hop`` choose each side (``none`` leaves that side empty), e.g. LRE alone:
    ``{one_hop: lre, two_hop: none}``. The synthetic world is both sides or neither: the
    train pipeline trains on it."""

    source: KnowledgeSource | None = "synthetic"
    one_hop: OneHopSource = "synthetic"
    two_hop: TwoHopSource = "synthetic"

    @model_validator(mode="before")
    @classmethod
    def _sides(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("one_hop") or data.get("two_hop"):
            if data.get("source") is not None:
                raise ValueError(
                    "set either source or one_hop/two_hop, not both (on the command line: "
                    "--params=knowledge.source=null,knowledge.one_hop=lre)"
                )
            return {"source": None, "one_hop": data.get("one_hop") or "none", "two_hop": data.get("two_hop") or "none", **{
                k: v for k, v in data.items() if k not in ("source", "one_hop", "two_hop")
            }}
        source = data.get("source") or "synthetic"
        if source in SOURCE_PAIRS:
            data["one_hop"], data["two_hop"] = SOURCE_PAIRS[source]
        return data

    @model_validator(mode="after")
    def _compatible(self) -> KnowledgeSettings:
        if (self.one_hop == "synthetic") != (self.two_hop == "synthetic"):
            raise ValueError(
                f"one_hop {self.one_hop!r} with two_hop {self.two_hop!r}: the synthetic world is both sides or "
                f"neither (the train pipeline trains on it); use source: synthetic"
            )
        if self.one_hop == self.two_hop == "none":
            raise ValueError("one_hop and two_hop are both 'none': choose at least one source")
        return self


LRE_COMMIT = "1b9ec3cf2b8368e42bde7e80fcef384312a6ec07"
LRE_SHA256 = "bd3c2791d3e61900fbc7798914fddcb514f23da053d145a9ad991825556e7991"


class LreSettings(_Settings):
    """LRE's relations: a local folder, downloaded from ``url`` when missing."""

    path: str = "../shared/data/lre"
    # Pinned to a commit (the last of evandez/relations, 2023-11-23) and its relations' hash.
    url: str | None = f"https://github.com/evandez/relations/archive/{LRE_COMMIT}.zip"
    archive_folder: str = f"relations-{LRE_COMMIT}/data"  # the folder of the archive that holds the relations
    sha256: str | None = LRE_SHA256  # knowledge.download.folder_sha256 of the relations; None: not checked
    relation_types: list[str] | None = ["factual", "commonsense", "linguistic", "bias"]  # None: every type
    template_index: Annotated[int, Field(ge=0)] = 0
    place_on_tokens: bool = True  # subjects must start and end on the model's token boundaries


class TwoHopFactSettings(_Settings):
    path: str = "data/01_raw/TwoHopFact.csv"
    url: str | None = "https://huggingface.co/datasets/soheeyang/TwoHopFact/resolve/main/TwoHopFact.csv"
    # The CSV's sha256; None: not checked (the hash is logged at download, pin it here).
    sha256: str | None = None
    # Set: write a TwoHopFact-shaped CSV of this many chains of a synthetic world at ``path``
    # (instead of downloading TwoHopFact) and read it with the same reader (conf/paper_sim).
    simulate_chains: PositiveInt | None = None


class DataPrepParameters(_Settings):
    world: WorldConfig = WorldConfig()
    evaluation_sample: EvaluationSample = EvaluationSample()
    knowledge: KnowledgeSettings = KnowledgeSettings()
    lre: LreSettings = LreSettings()
    twohopfact: TwoHopFactSettings = TwoHopFactSettings()


def seed_list(seeds: Any, key: str) -> Any:
    """A list of seeds as ``--params`` delivers it: `kedro run --params` splits its items at
    commas, so a list arrives as one string (``key=[0 1 2]``, which OmegaConf reads as
    ['0 1 2'], or ``key=0 1 2``); a single integer is a list of one. Anything else is
    returned for pydantic to judge."""
    if isinstance(seeds, int):
        return [seeds]
    items = [seeds] if isinstance(seeds, str) else seeds
    if not isinstance(items, list) or not any(isinstance(item, str) for item in items):
        return seeds
    words = [word for item in items for word in str(item).strip("[]").replace(";", " ").split()]
    try:
        return [int(word) for word in words]
    except ValueError:
        raise ValueError(
            f"{key} {seeds!r} is not a list of integers: write e.g. [0, 1, 2] in the parameters file, "
            f"or --params='{key}=[0 1 2]' (kedro splits --params at commas)"
        ) from None


# -------------------------------------------------------------------- parameters_train.yml
class TrainParameters(_Settings):
    model_shape: ModelShape = ModelShape()
    training: TrainConfig = TrainConfig()
    training_time: TrainingTime = TrainingTime()
    base_model: ModelSource = ModelSource(kind="train")
    # The trained model is one draw: with more seeds the embedded study (train, quantize,
    # evaluate, probe) runs once per trained model. The model of ``training.seed`` keeps the
    # study's own names and folders; every other seed k is the namespace ``seed<k>``, its
    # files under ``<study folder>/seed<k>/`` (run_config.training_seed_namespaces). Kept out
    # of ``training``: it changes no model, so no trained model's fingerprint holds it.
    training_seeds: list[int] | None = None

    @field_validator("training_seeds", mode="before")
    @classmethod
    def _seeds_from_the_command_line(cls, seeds: Any) -> Any:
        return seed_list(seeds, "training_seeds")

    @field_validator("training_seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if seeds is None:
            return seeds
        if not seeds or len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
            raise ValueError(f"list distinct training seeds >= 0, e.g. [0, 1, 2] (null: training.seed only); got {seeds}")
        source = info.data.get("base_model")
        if len(seeds) > 1 and source is not None and source.kind != "train":
            raise ValueError(
                f"the base model is loaded (base_model.kind: {source.kind}): one trained model, one seed; training "
                f"seeds apply to a model trained here (base_model.kind: train): set training_seeds: null"
            )
        return seeds


# ----------------------------------------------------------------- parameters_quantize.yml
class QuantizeSettings(_Settings):
    overwrite: bool = False  # False: keep a variant already on disk with the same fingerprint
    # One calibration draw per seed: the order in which corpus statements become calibration
    # texts. Each calibrated variant (GPTQ, AWQ) is quantized once per seed, the first under
    # its own name, the others as <name>_draw1, _draw2 ... (quantization.variants.expand_draws).
    calibration_seeds: list[int] = Field([0], min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _renamed_seed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "calibration_seed" in data:
            raise ValueError(
                f"quantize.calibration_seed is now quantize.calibration_seeds, a list of draws: "
                f"write calibration_seeds: [{data['calibration_seed']}]"
            )
        return data

    @field_validator("calibration_seeds", mode="before")
    @classmethod
    def _seeds_from_the_command_line(cls, seeds: Any) -> Any:
        return seed_list(seeds, "quantize.calibration_seeds")

    @field_validator("calibration_seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"the seeds {seeds} repeat one: list each calibration draw's seed once")
        return seeds


class QuantizeParameters(_Settings):
    # name -> settings of quantization.variants.VariantSpec, checked by run_config.active_variants
    variants: dict[str, dict[str, Any]] = {"fp": {"method": "fp"}}
    quantize: QuantizeSettings = QuantizeSettings()

    @field_validator("variants", mode="before")
    @classmethod
    def _no_empty_settings(cls, variants: Any) -> Any:
        if isinstance(variants, dict):
            return {name: dict(settings or {}) for name, settings in variants.items()}
        return variants


# ----------------------------------------------------------------- parameters_evaluate.yml
class EvaluateSettings(_Settings):
    batch_size: PositiveInt = 256
    max_new_tokens: PositiveInt | None = None  # None: the longest answer's tokens plus one
    # teacher_forced: one forward pass decides each whole-name verdict (generation only where
    # it cannot decide); generate: greedy decoding.
    mode: Literal["teacher_forced", "generate"] = "teacher_forced"


class EvaluateParameters(_Settings):
    evaluate: EvaluateSettings = EvaluateSettings()


# -------------------------------------------------------------------- parameters_probe.yml
class EntRecSettings(_Settings):
    layers: list[Annotated[int, Field(ge=0)]] | None = None  # None: every layer


class AttributionSettings(_Settings):
    prompt_set: Literal["one_hop", "two_hop"] = "one_hop"
    max_prompts: PositiveInt | None = 64
    norm: Literal["final_scale", "renorm"] = "final_scale"  # renorm: a logit lens
    candidates: PositiveInt | None = None  # score only the top-K neurons of a first-order estimate exactly
    top_k: PositiveInt = 300  # tau: the lowest score among the reference's top-k FFN neurons


class ProbeSettings(_Settings):
    capture: CaptureConfig = CaptureConfig()
    probes: ProbeConfig = ProbeConfig()
    entrec: EntRecSettings = EntRecSettings()
    attribution: AttributionSettings = AttributionSettings()


class ProbeParameters(_Settings):
    probe: ProbeSettings = ProbeSettings()


# ------------------------------------------------------------------- parameters_report.yml
class ReportParameters(_Settings):
    report: ReportSettings = ReportSettings()


# ------------------------------------------------------------------ parameters_scaling.yml
class ScalingParameters(_Settings):
    scaling: ScalingSettings | None = None  # None: no scaling study configured


# ------------------------------------------------------------------ parameters_runtime.yml
Threads = PositiveInt | Literal["auto"] | None


class ThreadSettings(_Settings):
    """torch's intra-op threads, set before each node (``fkr_kedro.hooks.ThreadsHook``).

    ``auto`` (the default) follows the work (:mod:`fkr_kedro.modeling.threads`): one thread
    for a base model below ``auto_min_parameters`` (the embedded default's evaluation and
    probes: short operators whose threads wait for each other, and two threads collapse when
    one other busy process shares a 2-core machine), and the cores free when the node starts
    for a larger one (a real model's matmuls scale with cores) and for the ``auto_free_cores``
    nodes (training), so one on a busy machine, never more than torch had at the run's start
    (OMP_NUM_THREADS where set; docs/performance.md). A number fixes the threads; None leaves
    torch's own default (one thread per core)."""

    default: Threads = "auto"
    pipelines: dict[str, Threads] = {}  # pipeline name -> threads of its nodes
    nodes: dict[str, Threads] = {}  # node name -> threads (wins over pipelines)
    auto_min_parameters: PositiveInt = AUTO_MIN_PARAMETERS  # below: one thread under auto
    # Nodes (their name without the namespace) that get one thread under auto whatever the
    # model: quantization, whose GPTQ/AWQ runs GPTQModel's own pool of CPU workers (two torch
    # threads on top made SmolLM2's GPTQ 0.89x as fast idle, 0.74x beside a busy core).
    auto_one_thread: list[str] = ["quantize"]
    # Nodes (their name without the namespace) that get the free cores under auto whatever the
    # model, measured at the node's start: training, whose one- and two-thread runs give
    # bitwise-identical weights and the same metrics on 3 seeds, two ~1.5x faster when idle
    # (docs/results_performance.md). Beside a busy process the free cores round to one.
    auto_free_cores: list[str] = ["train_model"]

    def for_node(self, node: str, pipeline: str | None) -> int | str | None:
        """The threads of ``node`` (run as part of ``pipeline``): a number, ``auto`` or None
        (torch's default)."""
        if node in self.nodes:
            return self.nodes[node]
        if pipeline is not None and pipeline in self.pipelines:
            return self.pipelines[pipeline]
        return self.default


class RuntimeSettings(_Settings):
    threads: ThreadSettings = ThreadSettings()


class RuntimeParameters(_Settings):
    runtime: RuntimeSettings = RuntimeSettings()


# ------------------------------------------------------------------- parameters_export.yml
class ExportSettings(_Settings):
    """The lm-evaluation-harness task folder (``kedro run --pipelines=export``)."""

    name: str | None = None  # task group name; None: the knowledge source's (world_facts, lre_twohopfact ...)
    max_gen_toks: PositiveInt | None = None  # None: evaluate.max_new_tokens, else 16


class ExportParameters(_Settings):
    export: ExportSettings = ExportSettings()


# ----------------------------------------------------------------- parameters_capacity.yml
class CapacityParameters(_Settings):
    capacity: CapacitySettings | None = None  # None: no capacity study configured


# One model per parameters file; the study's parameters are all of them together.
PARAMETER_FILES: dict[str, type[_Settings]] = {
    "parameters_data_prep.yml": DataPrepParameters,
    "parameters_train.yml": TrainParameters,
    "parameters_quantize.yml": QuantizeParameters,
    "parameters_evaluate.yml": EvaluateParameters,
    "parameters_probe.yml": ProbeParameters,
    "parameters_report.yml": ReportParameters,
    "parameters_scaling.yml": ScalingParameters,
    "parameters_runtime.yml": RuntimeParameters,
    "parameters_export.yml": ExportParameters,
    "parameters_capacity.yml": CapacityParameters,
}


class StudyParameters(
    DataPrepParameters, TrainParameters, QuantizeParameters, EvaluateParameters, ProbeParameters,
    ReportParameters, ScalingParameters, RuntimeParameters, ExportParameters, CapacityParameters,
):
    """Every parameter of a study."""


class ParameterError(ValueError):
    """A parameter that is unknown, missing or out of range; the message names the key, the
    file that sets it and what is allowed."""


def validate_parameters(
    params: dict[str, Any],
    conf_source: str | Path | None = None,
    envs: tuple[str, ...] = (),
    overrides: dict[str, Any] | None = None,
) -> StudyParameters:
    """The merged parameters as :class:`StudyParameters`, or one :class:`ParameterError`
    listing every problem with its key and where it is set: ``--params`` (``overrides``) or
    the parameters file in ``conf_source/<env>/`` (the last of ``envs`` that sets it)."""
    try:
        return StudyParameters.model_validate(params)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"])
            if overrides and _has_path(overrides, item["loc"]):
                where = "--params"
            else:
                where = _file_setting(item["loc"], conf_source, envs)
            problems.append(f"  {key} ({where}): {_describe(item)}")
        raise ParameterError(
            f"{len(problems)} invalid parameter{'s' if len(problems) > 1 else ''}; fix "
            f"{'them' if len(problems) > 1 else 'it'} (or the --params override) and run again:\n" + "\n".join(problems)
        ) from None


def _describe(item: dict) -> str:
    if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown key: check its spelling against the documented keys in conf/base"
    message = item["msg"].removeprefix("Value error, ")
    if item["type"] not in ("missing",) and "input" in item and not isinstance(item["input"], dict):
        message += f" (got {item['input']!r})"
    return message


def _file_setting(loc: tuple, conf_source: str | Path | None, envs: tuple[str, ...]) -> str:
    """The parameters file that sets the key at ``loc`` (or, for a key none sets, the file of
    its top-level section), for error messages."""
    if conf_source is None:
        return "parameters"
    found = None
    for env in envs:
        folder = Path(conf_source) / env
        for path in sorted(folder.glob("parameters*.yml")) + sorted(folder.glob("parameters*/**/*.yml")):
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError):
                continue
            if _has_path(data, loc):
                found = path
            elif found is None and _has_path(data, loc[:1]):
                found = path
    if found is None:
        home = next((name for name, model in PARAMETER_FILES.items() if loc and loc[0] in model.model_fields), None)
        return f"not set; its section belongs in conf/base/{home}" if home else "not set in any parameters file"
    try:
        return str(found.relative_to(Path(conf_source).parent))
    except ValueError:
        return str(found)


def _has_path(data: Any, loc: tuple) -> bool:
    for part in loc:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True
