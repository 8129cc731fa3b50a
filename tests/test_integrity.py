"""Nothing lost, nothing silently wrong: weight manifests written with every model directory
and checked on load (a same-size corruption and a truncation are refused, naming the variant
and the command that rebuilds it; the quantize step's keep-check rebuilds them), staging
folders of dead processes removed while those of live ones stay, variant fingerprints that
survive copying or moving the project and record what changes a variant's bytes, and the
missing-input message that names the whole chain of pipelines to run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from kedro.io import DatasetError
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from fkr_kedro.datasets.hf_model import HFModelDataset
from fkr_kedro.datasets.variant_model import ModelDirectoryDataset, VariantModelDataset
from fkr_kedro.hooks import missing_chain, run_chain_advice
from fkr_kedro.modeling import storage
from fkr_kedro.modeling.load import CausalLM
from fkr_kedro.modeling.storage import (
    LEGACY_STAGING_AGE_S,
    MANIFEST_FILE,
    remove_dead_staging,
    staged_directory,
    verify_weights,
    weights_digest,
)
from fkr_kedro.quantization import api
from fkr_kedro.quantization.api import quantization_environment, quantize_or_keep, recorded_fingerprint, variant_fingerprint
from fkr_kedro.quantization.variants import VariantSpec

WORDS = "the capital of france is paris and germany berlin".split()
FP = VariantSpec(method="fp", device="cpu")


def _tiny_lm(seed: int = 0) -> CausalLM:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>", "<pad>", *WORDS])}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<pad>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(WORDS) + 2, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16, pad_token_id=1,
    )
    return CausalLM(model=LlamaForCausalLM(config).eval(), tokenizer=tokenizer)


def _weights(model_dir: Path) -> Path:
    (weights,) = Path(model_dir).glob("*.safetensors")
    return weights


def _corrupt(path: Path) -> None:
    """Same size, other bytes (what random bytes written in place do)."""
    size = path.stat().st_size
    path.write_bytes(os.urandom(size))
    assert path.stat().st_size == size


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def project(tmp_path) -> Path:
    """A project folder with a trained base model (written through its dataset) and the
    fp variant quantized from it."""
    root = tmp_path / "project"
    base = root / "data/06_models/base"
    HFModelDataset(str(base)).save(_tiny_lm())
    _save(root / "data/06_models/variants/fp", _job(FP, base, ()))
    return root


def _job(spec: VariantSpec, base: Path, texts=()) -> tuple:
    return spec, Path(base), list(texts)


def _save(variant: Path, job: tuple) -> None:
    """What the quantize node and its dataset do: quantize (or keep) here, then save."""
    spec, base, texts = job
    VariantModelDataset(str(variant)).save(quantize_or_keep(base, spec, texts, variant))


def _variant(root: Path, name: str = "fp") -> Path:
    return root / "data/06_models/variants" / name


# --- manifests and checks on load ----------------------------------------------------------


def test_every_model_directory_records_its_files(project):
    for model_dir in (project / "data/06_models/base", _variant(project)):
        manifest = json.loads((model_dir / MANIFEST_FILE).read_text())["files"]
        weights = _weights(model_dir)
        assert manifest[weights.name]["size"] == weights.stat().st_size
        assert {"config.json", weights.name} <= set(manifest) and MANIFEST_FILE not in manifest
        assert verify_weights(model_dir)["files"] == manifest
        umask = os.umask(0)
        os.umask(umask)
        assert model_dir.stat().st_mode & 0o777 == 0o777 & ~umask  # not tempfile's 0700
    assert "fp" in json.loads((_variant(project) / "variant.json").read_text())["name"]
    # An intact variant loads.
    assert VariantModelDataset(str(_variant(project)), load_args={"device": "cpu"}).load().model is not None


@pytest.mark.parametrize(("damage", "problem"), [(_corrupt, "same size, other bytes"), (_truncate, "is truncated")])
def test_a_damaged_variant_is_refused_naming_it_and_the_rebuild_command(project, damage, problem):
    damage(_weights(_variant(project)))
    for dataset in (VariantModelDataset(str(_variant(project))), ModelDirectoryDataset(str(_variant(project)))):
        with pytest.raises(DatasetError) as error:
            dataset.load()
        message = str(error.value)
        assert "variant 'fp'" in message and problem in message and "model.safetensors" in message
        assert "`kedro run --namespaces=fp`" in message and "kedro run --pipeline=quantize" in message


def test_a_weight_file_added_afterwards_is_refused(project):
    shutil.copy(_weights(_variant(project)), _variant(project) / "model-extra.safetensors")
    with pytest.raises(DatasetError, match=r"model-extra.safetensors were added after it was written"):
        VariantModelDataset(str(_variant(project))).load()


def test_a_damaged_base_model_is_refused_naming_the_train_pipeline(project):
    base = project / "data/06_models/base"
    _corrupt(_weights(base))
    for dataset in (HFModelDataset(str(base)), ModelDirectoryDataset(str(base))):
        with pytest.raises(DatasetError, match=r"other bytes.*rebuild it with `kedro run --pipeline=train`"):
            dataset.load()


def test_the_keep_check_rebuilds_a_damaged_variant_and_keeps_an_intact_one(project, caplog):
    variant = _variant(project)
    job = _job(FP, project / "data/06_models/base", ())
    original = _weights(variant).read_bytes()
    record = (variant / "variant.json").stat().st_mtime_ns
    _save(variant, job)
    assert (variant / "variant.json").stat().st_mtime_ns == record  # intact: kept, not rewritten

    for damage in (_corrupt, _truncate):
        damage(_weights(variant))
        with caplog.at_level(logging.INFO, logger=api.__name__):
            _save(variant, job)
        assert "quantizing it again" in caplog.text
        caplog.clear()
        assert _weights(variant).read_bytes() == original  # the fresh fp variant, bit for bit
        verify_weights(variant)


def test_a_variant_written_before_manifests_is_refused_on_load_and_rebuilt(project, caplog):
    variant = _variant(project)
    (variant / MANIFEST_FILE).unlink()
    with pytest.raises(DatasetError, match=rf"variant 'fp' .*no {MANIFEST_FILE}.*kedro run --namespaces=fp"):
        VariantModelDataset(str(variant)).load()
    with caplog.at_level(logging.INFO, logger=api.__name__):
        _save(variant, _job(FP, project / "data/06_models/base", ()))
    assert f"no {MANIFEST_FILE}" in caplog.text and "quantizing it again" in caplog.text
    verify_weights(variant)


def test_a_base_model_written_before_manifests_loads_with_a_warning(project, caplog):
    base = project / "data/06_models/base"
    (base / MANIFEST_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        HFModelDataset(str(base), load_args={"device": "cpu"}).load()
    assert "loaded unverified" in caplog.text and "kedro run --pipeline=train" in caplog.text


# --- fingerprints --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["copy", "move"])
def test_a_copied_or_moved_project_keeps_its_variants(project, tmp_path, monkeypatch, how):
    before = recorded_fingerprint(_variant(project))
    elsewhere = tmp_path / "elsewhere" / "project"
    elsewhere.parent.mkdir()
    if how == "copy":
        shutil.copytree(project, elsewhere)  # new inodes and modification times, like `cp -r`
    else:
        project.rename(elsewhere)
    base = elsewhere / "data/06_models/base"
    assert variant_fingerprint(base, FP, []) == before
    assert str(tmp_path) not in json.dumps(before)  # no path in the fingerprint

    def refuse(*args):
        raise AssertionError("the variant was quantized again")

    monkeypatch.setattr(api, "_write_variant", refuse)
    _save(_variant(elsewhere), _job(FP, base, ()))


def test_a_retrained_base_model_changes_the_fingerprint(project, tmp_path):
    other = tmp_path / "other"
    HFModelDataset(str(other)).save(_tiny_lm(seed=1))
    assert weights_digest(other) != weights_digest(project / "data/06_models/base")
    assert variant_fingerprint(other, FP, []) != variant_fingerprint(project / "data/06_models/base", FP, [])


def test_thread_count_and_library_versions_are_part_of_a_calibrated_variants_fingerprint(project):
    gptq = VariantSpec(method="gptq", bits=4, group_size=32, calibration_size=2, device="cpu")
    rtn = VariantSpec(method="rtn", bits=4, group_size=32, device="cpu")
    bnb = VariantSpec(method="bnb_int8", device="cpu")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = quantization_environment(gptq), quantization_environment(rtn)
        torch.set_num_threads(2)
        two = quantization_environment(gptq), quantization_environment(rtn)
    finally:
        torch.set_num_threads(threads)
    assert one[0]["torch_threads"] == 1 and two[0]["torch_threads"] == 2
    assert one[1] == two[1] and "torch_threads" not in one[1]  # RTN rounds each weight alone
    assert {"torch", "transformers", "gptqmodel", "device"} <= set(one[0])
    assert all(one[0][library] for library in ("torch", "transformers", "gptqmodel"))  # installed versions
    assert "bitsandbytes" in quantization_environment(bnb) and "gptqmodel" not in quantization_environment(bnb)
    texts = ["the capital of france is paris", "the capital of germany is berlin"]
    assert variant_fingerprint(project / "data/06_models/base", gptq, texts)["environment"] == quantization_environment(gptq)


def test_a_variant_written_under_other_settings_is_quantized_again(project, monkeypatch, caplog):
    """The keep-check compares the recorded environment: a fingerprint written under other
    settings (here: another torch version) is a rebuild, with the difference logged."""
    variant = _variant(project)
    record = json.loads((variant / "variant.json").read_text())
    record["environment"]["torch"] = "0.0.1"
    (variant / "variant.json").write_text(json.dumps(record))
    calls = []
    monkeypatch.setattr(api, "_write_variant", lambda *args: calls.append(args))
    with caplog.at_level(logging.INFO, logger=api.__name__):
        made = quantize_or_keep(project / "data/06_models/base", FP, [], variant)
    assert len(calls) == 1 and not made.kept and "environment.torch: '0.0.1' ->" in caplog.text


# --- staging left by dead processes --------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_staging_of_a_dead_process_is_removed_and_of_a_live_one_kept(tmp_path):
    variants = tmp_path / "variants"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_dir = variants / f".gptq_w4_g32.pid{_dead_pid()}.k2j3h4ab"
        live_dir = variants / f".gptq_w4_g32.pid{live.pid}.z9y8x7wv"
        dead_file = variants / f".footprint.json.pid{_dead_pid()}.q1w2e3r4.tmp"
        for folder in (dead_dir, live_dir):
            folder.mkdir(parents=True)
            (folder / "model.safetensors").write_bytes(b"partial")
        dead_file.write_text("{")
        # From before process ids were recorded: removed only once untouched for an hour.
        old, recent = variants / ".rtn_w4_g32.abcd1234", variants / ".rtn_w2_g32.efgh5678"
        old_file = variants / ".recall.csv.ijkl9012.tmp"
        for folder in (old, recent):
            folder.mkdir()
        old_file.write_text("a,")
        for stale in (old, old_file):
            os.utime(stale, (time.time() - LEGACY_STAGING_AGE_S - 60,) * 2)
        kept = variants / "gptq_w4_g32"
        kept.mkdir()

        removed = remove_dead_staging(variants)
        assert set(removed) == {dead_dir, dead_file, old, old_file}
        assert live_dir.is_dir() and recent.is_dir() and kept.is_dir() and not dead_dir.exists()
    finally:
        live.kill()
        live.wait()


def test_a_killed_write_leaves_staging_that_the_next_write_removes(tmp_path):
    target = tmp_path / "variants" / "gptq_w4_g32"
    script = (
        "import os, sys\n"
        "from fkr_kedro.modeling.storage import staged_directory\n"
        f"with staged_directory({str(target)!r}) as staging:\n"
        "    (staging / 'model.safetensors').write_bytes(b'half')\n"
        "    os._exit(9)  # killed mid-write\n"
    )
    src = str(Path(storage.__file__).parents[2])
    subprocess.run([sys.executable, "-c", script], check=False, env={**os.environ, "PYTHONPATH": src})
    (left,) = [p for p in target.parent.iterdir() if p.name.startswith(".gptq_w4_g32.pid")]
    assert not target.exists()
    with staged_directory(target) as staging:
        (staging / "config.json").write_text("{}")
    assert not left.exists() and (target / "config.json").is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["gptq_w4_g32"]


def test_a_failed_write_keeps_the_previous_directory(tmp_path):
    target = tmp_path / "m"
    with staged_directory(target) as staging:
        (staging / "model.safetensors").write_bytes(b"good")
    with pytest.raises(RuntimeError), staged_directory(target) as staging:
        (staging / "model.safetensors").write_bytes(b"ba")
        raise RuntimeError("interrupted")
    assert (target / "model.safetensors").read_bytes() == b"good"
    verify_weights(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


# --- missing inputs ------------------------------------------------------------------------


def test_a_missing_input_names_the_whole_chain_once():
    # Nothing exists: the quantize pipeline's variant needs the base model (train), which
    # needs the data (data_prep).
    chain = missing_chain(["fp.model@variant", "one_hop_prompts"], lambda name: False)
    assert chain == ["data_prep", "train", "quantize"]
    assert run_chain_advice(chain) == (
        "run `kedro run` (data_prep -> train -> quantize), or "
        "`kedro run --pipelines=data_prep,train,quantize` first"
    )
    # Only what is missing is named: with the data there, training is the one step.
    prepared = {"one_hop_prompts", "two_hop_prompts", "train_corpus", "world_summary"}
    assert missing_chain(["base_model@dir"], lambda name: name in prepared) == ["train"]
    assert run_chain_advice(["probe"]) == "the 'probe' pipeline writes it; run `kedro run --pipeline=probe` first"
    assert missing_chain(["no_such_dataset"], lambda name: False) == []


def test_random_bytes_in_an_rtn_variant_are_found_and_the_rebuild_equals_the_original(project):
    """The case seen in a real run: random bytes written in place over rtn_w4_g32 were kept
    and evaluated (one-hop recall 99.8% -> 0.09%). Now loading refuses it and the keep-check
    quantizes it again, to the same bytes a fresh run writes."""
    spec = VariantSpec(method="rtn", bits=4, group_size=32, device="cpu")
    variant = _variant(project, "rtn_w4_g32")
    job = _job(spec, project / "data/06_models/base", ())
    _save(variant, job)
    original = {p.name: p.read_bytes() for p in variant.glob("*.safetensors")}
    _corrupt(_weights(variant))
    with pytest.raises(DatasetError, match=r"variant 'rtn_w4_g32' .*other bytes.*kedro run --namespaces=rtn_w4_g32"):
        VariantModelDataset(str(variant)).load()
    _save(variant, job)
    assert {p.name: p.read_bytes() for p in variant.glob("*.safetensors")} == original
    assert VariantModelDataset(str(variant), load_args={"device": "cpu"}).load().model is not None


# --- outputs left older than their inputs --------------------------------------------------


def _score(x):
    return x


def _summarize(a, b):
    return {"a": a, "b": b}


def test_a_partial_run_warns_about_outputs_left_older_than_their_inputs(tmp_path, monkeypatch):
    """`--only-missing-outputs` after one variant's scores were deleted recomputes them, but
    not the cross-variant summary and report read from them: the run says so, with the
    command that recomputes exactly those."""
    from kedro.io import DataCatalog
    from kedro.pipeline import Pipeline, node
    from kedro_datasets.json import JSONDataset

    from fkr_kedro import hooks
    from fkr_kedro.hooks import advice

    pipelines = {
        "evaluate": Pipeline([
            node(_score, "params:a", "a.scores", name="a.score"),
            node(_score, "params:b", "b.scores", name="b.score"),
        ]),
        "report": Pipeline([
            node(_summarize, ["a.scores", "b.scores"], "summary", name="summarize"),
            node(_score, "summary", "report", name="render"),
        ]),
    }
    monkeypatch.setattr(advice, "project_pipelines", lambda: pipelines)
    from fkr_kedro.run_config import StudyConfigLoader, set_active_config_loader

    # The study of `kedro run --env=test` (the advice carries its --env; conftest resets it).
    set_active_config_loader(StudyConfigLoader(str(Path(__file__).resolve().parents[1] / "conf"), env="test", base_env="base", default_run_env="local"))
    names = ("a.scores", "b.scores", "summary", "report")
    catalog = DataCatalog({name: JSONDataset(filepath=str(tmp_path / f"{name}.json")) for name in names})
    for name in names:
        catalog.save(name, 1)
    old = time.time() - 600
    for name in names:
        os.utime(tmp_path / f"{name}.json", (old, old))

    def run(saved: list[str], ran: list[str]) -> str | None:
        hook = hooks.StaleOutputsHook()
        hook.before_pipeline_run({"env": "test"}, Pipeline([]), catalog)
        for name in ran:
            hook.after_node_run(next(n for p in pipelines.values() for n in p.nodes if n.name == name))
        for name in saved:
            catalog.save(name, 2)
            hook.after_dataset_saved(name)
        return hook.stale_advice()

    advice = run(saved=["a.scores"], ran=["a.score"])
    assert advice is not None and "2 output(s)" in advice and "report, summary" in advice
    assert "`kedro run --from-nodes=summarize --env=test`" in advice  # the active study's --env
    # The whole chain ran: nothing is stale.
    assert run(saved=["a.scores", "summary", "report"], ran=["a.score", "summarize", "render"]) is None
    # Saved but not rewritten (a variant kept on disk): nothing is stale.
    for name in names:
        os.utime(tmp_path / f"{name}.json", (old, old))
    hook = hooks.StaleOutputsHook()
    hook.before_pipeline_run({}, Pipeline([]), catalog)
    hook.after_dataset_saved("a.scores")
    assert hook.stale_advice() is None
