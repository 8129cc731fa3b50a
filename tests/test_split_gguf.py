"""A GGUF split into parts (llama.cpp's gguf-split format): checked, joined once into one GGUF
file, and loaded with the same tensors as the unsplit file. The model is a tiny Llama
(2 layers, width 32, a 260-token byte-level vocabulary, Q8_0/Q4_0/Q4_1 and F32 tensors)
written here with gguf-py's GGUFWriter, whole and in three parts."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from fkr_kedro.modeling.gguf_parts import RECORD_SUFFIX
from fkr_kedro.modeling.load import ModelSourceError, as_source, gguf_location, load_model, load_source_tokenizer

Q = gguf.GGMLQuantizationType
STEM = "tiny"
PART_NAMES = [f"{STEM}-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: every byte as a printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def write_tiny_gguf(path: Path, split_max_tensors: int = 0) -> None:
    """A tiny Llama as GGUF; with ``split_max_tensors``, in parts (``<stem>-0000i-of-0000n.gguf``
    beside ``path``) as gguf-split writes them."""
    rng = np.random.default_rng(0)
    hidden, ffn, layers, vocab = 32, 64, 2, 260
    writer = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    writer.add_name("tiny")
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([*_bytes_to_unicode().values(), "Ġt", "he", "Ġthe", "<|endoftext|>"])
    writer.add_token_types([1] * 259 + [3])
    writer.add_token_merges(["Ġ t", "h e", "Ġt he"])
    writer.add_bos_token_id(259)
    writer.add_eos_token_id(259)

    def tensor(name: str, shape: tuple[int, ...], kind: Q | None = None) -> None:
        values = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if kind is None:
            writer.add_tensor(name, values)
        else:
            writer.add_tensor(name, gguf.quants.quantize(values, kind), raw_dtype=kind)

    tensor("token_embd.weight", (vocab, hidden), Q.Q8_0)
    for i in range(layers):
        tensor(f"blk.{i}.attn_norm.weight", (hidden,))
        tensor(f"blk.{i}.attn_q.weight", (hidden, hidden), Q.Q4_0)
        tensor(f"blk.{i}.attn_k.weight", (hidden // 2, hidden), Q.Q8_0)
        tensor(f"blk.{i}.attn_v.weight", (hidden // 2, hidden), Q.Q8_0)
        tensor(f"blk.{i}.attn_output.weight", (hidden, hidden), Q.Q4_1)
        tensor(f"blk.{i}.ffn_norm.weight", (hidden,))
        tensor(f"blk.{i}.ffn_gate.weight", (ffn, hidden), Q.Q8_0)
        tensor(f"blk.{i}.ffn_up.weight", (ffn, hidden))
        tensor(f"blk.{i}.ffn_down.weight", (hidden, ffn), Q.Q8_0)
    tensor("output_norm.weight", (hidden,))
    tensor("output.weight", (vocab, hidden), Q.Q8_0)  # in the last part: untied from the embedding
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(the whole file, the folder of its three parts)."""
    root = tmp_path_factory.mktemp("tiny_gguf")
    (root / "whole").mkdir()
    write_tiny_gguf(root / "whole" / f"{STEM}.gguf")
    (root / "parts").mkdir()
    write_tiny_gguf(root / "parts" / f"{STEM}.gguf", split_max_tensors=8)  # 21 tensors: 8 + 8 + 5
    assert sorted(p.name for p in (root / "parts").iterdir()) == PART_NAMES
    return root / "whole" / f"{STEM}.gguf", root / "parts"


def _parts(folder: Path, tmp_path: Path) -> Path:
    """A private copy of the parts (tests may damage them)."""
    copy = tmp_path / "parts"
    shutil.copytree(folder, copy)
    return copy


def _source(folder: Path, checked: bool = True, **extra) -> dict:
    parts = []
    for name in PART_NAMES:
        path = folder / name
        parts.append(
            {"path": str(path), "size": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
            if checked else str(path)
        )
    return {"kind": "gguf", "paths": parts, "device": "cpu", "dtype": "float32", **extra}


def _tensors(path: Path) -> dict[str, tuple[int, tuple[int, ...], bytes]]:
    return {t.name: (int(t.tensor_type), tuple(int(d) for d in t.shape), t.data.tobytes()) for t in gguf.GGUFReader(path).tensors}


def test_the_parts_are_separate_gguf_files_transformers_reads_one_by_one(tiny):
    """Why joining is needed: each part has its own header, and only the first has the
    model's metadata (a later part alone is no model)."""
    _, parts = tiny
    first, second = (gguf.GGUFReader(parts / name) for name in PART_NAMES[:2])
    assert first.get_field("split.count").contents() == 3 and first.get_field("general.architecture") is not None
    assert second.get_field("general.architecture") is None and len(second.tensors) == 8
    assert (parts / PART_NAMES[1]).read_bytes()[:4] == b"GGUF"  # a header of its own, not a byte slice


def test_split_parts_join_into_the_unsplit_model_and_load_the_same_tensors(tiny, tmp_path):
    whole, parts = tiny
    source = _source(parts)
    folder, name = gguf_location(source, join_dir=tmp_path / "joined")
    joined = folder / name
    assert joined == tmp_path / "joined" / f"{STEM}.gguf" and (tmp_path / "joined" / f"{STEM}.gguf{RECORD_SUFFIX}").is_file()
    # Every tensor's type, shape and bytes (quantized blocks unchanged), in the same order;
    # the first part's metadata without the split keys.
    assert list(_tensors(joined).items()) == list(_tensors(whole).items())
    fields = gguf.GGUFReader(joined).fields
    assert not [k for k in fields if k.startswith("split.")]
    assert {k: fields[k].contents() for k in fields if not k.startswith("GGUF.")} == {
        k: f.contents() for k, f in gguf.GGUFReader(whole).fields.items() if not k.startswith("GGUF.")
    }
    assert sorted(p.name for p in (tmp_path / "joined").iterdir()) == [f"{STEM}.gguf", f"{STEM}.gguf{RECORD_SUFFIX}"]

    split_lm = load_model(source, gguf_join_dir=tmp_path / "joined")
    whole_lm = load_model({"kind": "gguf", "path": str(whole), "device": "cpu", "dtype": "float32"})
    split_state, whole_state = split_lm.model.state_dict(), whole_lm.model.state_dict()
    assert split_state.keys() == whole_state.keys() and len(split_state) == 21
    assert all(torch.equal(split_state[k], whole_state[k]) for k in whole_state)
    assert split_lm.model.config.tie_word_embeddings is False  # output.weight was in the third part
    tokens = split_lm.tokenizer("the theme")["input_ids"]
    assert tokens == whole_lm.tokenizer("the theme")["input_ids"]
    assert load_source_tokenizer(source, gguf_join_dir=tmp_path / "joined")("the theme")["input_ids"] == tokens


def test_the_joined_file_is_kept_while_the_parts_are_unchanged(tiny, tmp_path, monkeypatch):
    from fkr_kedro.modeling import gguf_parts

    parts = _parts(tiny[1], tmp_path)
    source = _source(parts)
    joined = Path(*gguf_location(source, join_dir=tmp_path / "joined"))
    written = joined.stat().st_mtime_ns

    def no_join(*args):
        raise AssertionError("joined again")

    with monkeypatch.context() as patch:
        patch.setattr(gguf_parts, "_write_joined", no_join)
        patch.setattr(gguf_parts, "file_sha256", no_join)  # not even hashed again
        assert Path(*gguf_location(source, join_dir=tmp_path / "joined")) == joined
        assert Path(*gguf_location(_source(parts, checked=False), join_dir=tmp_path / "joined")) == joined
        # Parameters expecting other bytes than those recorded: checked, not kept.
        other = as_source(source).model_dump()
        other["paths"][0]["sha256"] = "0" * 64
        with pytest.raises(AssertionError, match="joined again"):
            gguf_location(other, join_dir=tmp_path / "joined")
    assert joined.stat().st_mtime_ns == written
    # A part rewritten (same bytes, new mtime): hashed again and joined again, to the same file.
    os.utime(parts / PART_NAMES[2], ns=(written + 10**9, written + 10**9))
    before = joined.read_bytes()
    assert Path(*gguf_location(source, join_dir=tmp_path / "joined")) == joined
    assert joined.stat().st_mtime_ns != written and joined.read_bytes() == before


def test_a_corrupted_part_is_refused_with_its_name(tiny, tmp_path):
    parts = _parts(tiny[1], tmp_path)
    source = _source(parts)
    damaged = parts / PART_NAMES[1]
    data = bytearray(damaged.read_bytes())
    data[-100] ^= 0xFF  # one bit flipped in the tensor data: the size and header are fine
    damaged.write_bytes(bytes(data))
    with pytest.raises(ModelSourceError, match=(
        rf"base_model\.paths\[1\] \(.*{PART_NAMES[1]}\) has sha256 [0-9a-f]{{64}}, but the parameters expect "
        rf"[0-9a-f]{{64}}: the part is corrupt or another file; download it again \(or correct base_model\.paths\[1\]\.sha256\)"
    )):
        gguf_location(source, join_dir=tmp_path / "joined")
    assert not (tmp_path / "joined").exists() or not any((tmp_path / "joined").iterdir())

    # Cut short: refused by its size; without a size or hash given, by its tensor data.
    cut = parts / PART_NAMES[2]
    cut.write_bytes(cut.read_bytes()[:-1000])
    with pytest.raises(ModelSourceError, match=rf"base_model\.paths\[2\] \(.*{PART_NAMES[2]}\) is [\d,]+ bytes, but the parameters expect"):
        gguf_location(source, join_dir=tmp_path / "joined")
    with pytest.raises(ModelSourceError, match=rf"base_model\.paths\[2\] \(.*{PART_NAMES[2]}\) (ends before its tensor|is not a readable GGUF)"):
        gguf_location(_source(parts, checked=False), join_dir=tmp_path / "joined")
    assert not (tmp_path / "joined").exists() or not any((tmp_path / "joined").iterdir())


def test_missing_misordered_and_lone_parts_name_the_key_and_the_fix(tiny, tmp_path):
    whole, parts = tiny
    # Missing on disk: found when located, with the key and what is there.
    moved = _parts(parts, tmp_path)
    (moved / PART_NAMES[1]).unlink()
    with pytest.raises(ModelSourceError, match=(
        rf"base_model\.paths\[1\]: GGUF file .*{PART_NAMES[1]} not found \(GGUF files there: "
        rf"\['{PART_NAMES[0]}', '{PART_NAMES[2]}'\]\): put that part there .* or correct base_model\.paths\[1\]"
    )):
        gguf_location(_source(parts, checked=False) | {"paths": [str(moved / n) for n in PART_NAMES]}, join_dir=tmp_path / "j")
    # Missing from the list, out of order, or one part given as the whole model: when the
    # parameters are read.
    paths = [str(parts / n) for n in PART_NAMES]
    with pytest.raises(ModelSourceError, match=rf"lists 2 of the 3 parts: add {PART_NAMES[1]}"):
        as_source({"kind": "gguf", "paths": [paths[0], paths[2]]})
    with pytest.raises(ModelSourceError, match=r"out of order \(2, 1, 3\)"):
        as_source({"kind": "gguf", "paths": [paths[1], paths[0], paths[2]]})
    with pytest.raises(ModelSourceError, match=r"base_model\.path tiny-00001-of-00003\.gguf is part 1 of 3 .* base_model\.paths"):
        as_source({"kind": "gguf", "path": paths[0]})
    # Named otherwise, a part is known by its metadata: as the whole model, or out of order.
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for i, name in enumerate(PART_NAMES):
        shutil.copy(parts / name, renamed / f"piece{i}.gguf")
    with pytest.raises(ModelSourceError, match=r"base_model\.path piece0\.gguf is part 1 of 3 of a GGUF split"):
        gguf_location({"kind": "gguf", "path": str(renamed / "piece0.gguf")})
    swapped = [str(renamed / f"piece{i}.gguf") for i in (1, 0, 2)]
    with pytest.raises(ModelSourceError, match=r"base_model\.paths\[0\] \(piece1\.gguf\) is part 2 of 3, not part 1"):
        gguf_location({"kind": "gguf", "paths": swapped}, join_dir=tmp_path / "j")
    with pytest.raises(ModelSourceError, match=r"is one of 3 parts, but base_model\.paths lists 2"):
        gguf_location({"kind": "gguf", "paths": swapped[1:]}, join_dir=tmp_path / "j")
    # A whole file listed with a part is not a part.
    with pytest.raises(ModelSourceError, match=r"base_model\.paths\[1\] \(tiny\.gguf\) is not a part of a split GGUF"):
        gguf_location({"kind": "gguf", "paths": [str(renamed / "piece0.gguf"), str(whole), swapped[2]]}, join_dir=tmp_path / "j")
    # One whole file as a one-part list: checked and read in place.
    digest = hashlib.sha256(whole.read_bytes()).hexdigest()
    assert gguf_location({"kind": "gguf", "paths": [{"path": str(whole), "sha256": digest}]}, join_dir=tmp_path / "j") == (
        whole.parent, whole.name
    )


def test_parts_inside_an_installed_package_and_the_base_model_dataset(tiny, tmp_path, monkeypatch):
    """``package`` + ``files``, as a model shipped in a Python package would be; the base
    model dataset dequantizes the joined file once (joined under data/06_models/base_gguf)."""
    from fkr_kedro.datasets.hf_model import ModelSourceDataset

    package = tmp_path / "site" / "tiny_gguf_parts"
    shutil.copytree(tiny[1], package)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.chdir(tmp_path)
    source = {"kind": "gguf", "package": "tiny_gguf_parts", "files": PART_NAMES, "device": "cpu", "dtype": "float32"}
    assert as_source(source).label() == f"{STEM}.gguf (3 parts)"
    assert gguf_location(source) == (Path("data/06_models/base_gguf"), f"{STEM}.gguf")
    base = tmp_path / "data" / "06_models" / "base"
    ModelSourceDataset(str(base)).save(source)
    saved = (base / "model.safetensors").stat().st_mtime_ns
    whole = load_model({"kind": "gguf", "path": str(tiny[0]), "device": "cpu", "dtype": "float32"}).model.state_dict()
    loaded = ModelSourceDataset(str(base)).load().model.state_dict()
    assert all(torch.equal(loaded[k], whole[k]) for k in whole)
    # The next run keeps the dequantized model (its record, with the parts, is unchanged).
    ModelSourceDataset(str(base)).save(source)
    assert (base / "model.safetensors").stat().st_mtime_ns == saved
    # A part gone from the package: named, even though the joined file is still there.
    (package / PART_NAMES[2]).unlink()
    with pytest.raises(ModelSourceError, match=(
        rf"base_model\.files\[2\]: GGUF file .*{PART_NAMES[2]} in package tiny_gguf_parts not found"
    )):
        gguf_location(source)
