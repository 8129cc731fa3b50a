"""The quantization library on a tiny trained Llama (2 layers, width 64), on the CPU, with
the real libraries: every method quantizes, saves, reloads and runs; 8-bit stays close to
full precision, 2-bit RTN does not; effective bits match the stored format exactly; bad
variants fail before any model loads, naming the variant and the fix."""

from __future__ import annotations

import io
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fkr_kedro.modeling.load import CausalLM, load_causal_lm
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import ModelShape, TrainConfig, train_causal_lm
from fkr_kedro.quantization import (
    METHODS,
    VariantError,
    VariantSpec,
    footprint,
    load_quantized,
    quantize,
    validate_variants,
    variant_name,
)

SHAPE = ModelShape(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, max_position_embeddings=32)
CALIBRATION = 16
VARIANTS = [
    VariantSpec(method="fp", device="cpu"),
    VariantSpec(method="bnb_int8", device="cpu"),
    VariantSpec(method="bnb_nf4", device="cpu"),
    VariantSpec(method="bnb_fp4", device="cpu"),
    VariantSpec(method="gptq", bits=8, group_size=32, calibration_size=CALIBRATION, device="cpu"),
    VariantSpec(method="gptq", bits=4, group_size=32, calibration_size=CALIBRATION, device="cpu"),
    VariantSpec(method="awq", bits=4, group_size=32, calibration_size=CALIBRATION, device="cpu"),
    VariantSpec(method="rtn", bits=8, group_size=32, device="cpu"),
    VariantSpec(method="rtn", bits=2, group_size=32, device="cpu"),
    VariantSpec(method="hqq", bits=8, group_size=32, device="cpu"),
    VariantSpec(method="hqq", bits=4, group_size=32, device="cpu"),
    VariantSpec(method="hqq", bits=3, group_size=32, device="cpu"),
    VariantSpec(method="torchao_int8", device="cpu"),
    VariantSpec(method="torchao_int4", group_size=32, device="cpu"),
]
EIGHT_BIT = ["bnb_int8", "gptq_w8_g32", "rtn_w8_g32", "hqq_w8_g32", "torchao_int8"]


def _corpus() -> list[str]:
    rng = random.Random(0)
    people = [f"p{i}" for i in range(30)]
    cities = [f"c{i}" for i in range(12)]
    return [f"{a} lives in {rng.choice(cities)} and knows {b}" for a in people for b in rng.sample(people, 6)]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    texts = _corpus()
    tokenizer = build_word_tokenizer(texts)
    torch.manual_seed(0)
    train = TrainConfig(steps=40, batch_size=16, learning_rate=1e-2, warmup_steps=5)
    model, _ = train_causal_lm(texts, tokenizer, SHAPE, train, progress=False)
    path = tmp_path_factory.mktemp("source")
    CausalLM(model, tokenizer).save(path)
    return path, texts


@dataclass
class Run:
    dir: Path
    logits: torch.Tensor  # at the probe statements' real tokens
    vocab: dict[str, int]
    diff: float  # mean |logit - full-precision logit|, relative to the mean |full-precision logit|
    agree: float  # share of positions with the full-precision argmax


@pytest.fixture(scope="module")
def quantized(source, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Run], list[str]]:
    """Each variant quantized, saved, reloaded and run on probe statements, with the working
    directory moved to an empty folder; returns the runs and what was left in that folder."""
    source_dir, texts = source
    ref = load_causal_lm(source_dir, device="cpu")
    batch = ref.tokenizer(texts[-24:], return_tensors="pt", padding=True)
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        ref_logits = ref.model(**batch).logits.float()[mask]
    scale = ref_logits.abs().mean().item()

    root, workdir = tmp_path_factory.mktemp("variants"), tmp_path_factory.mktemp("cwd")
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        runs = {}
        for spec in VARIANTS:
            out = root / spec.name
            quantize(source_dir, spec, texts, out)
            lm = load_quantized(out, device="cpu")
            with torch.no_grad():
                logits = lm.model(**lm.tokenizer(texts[-24:], return_tensors="pt", padding=True)).logits.float()[mask]
            diff = (logits - ref_logits).abs().mean().item() / scale
            agree = (logits.argmax(-1) == ref_logits.argmax(-1)).float().mean().item()
            runs[spec.name] = Run(out, logits, lm.tokenizer.get_vocab(), diff, agree)
    finally:
        os.chdir(previous)
    return runs, sorted(p.name for p in workdir.iterdir())


@pytest.fixture(scope="module")
def variants(quantized) -> dict[str, Run]:
    return quantized[0]


# --- every method end to end ------------------------------------------------------------


@pytest.mark.parametrize("name", [s.name for s in VARIANTS])
def test_variant_saves_reloads_and_runs(variants, name):
    run = variants[name]
    assert (run.dir / "config.json").exists() and list(run.dir.glob("*.safetensors"))
    assert torch.isfinite(run.logits).all()
    record = json.loads((run.dir / "variant.json").read_text())
    assert record["name"] == name and record["seconds"] >= 0
    assert run.vocab == variants["fp"].vocab
    config = json.loads((run.dir / "config.json").read_text())
    assert ("quantization_config" in config) == (name != "fp")


def test_stored_formats(variants):
    """Quantized linears hold what each method is documented to store."""
    from fkr_kedro.quantization.footprint import safetensors_tensor_bytes

    def keys(name: str) -> set[str]:
        (file,) = variants[name].dir.glob("*.safetensors")
        prefix = "model.layers.0.mlp.down_proj."
        return {k.removeprefix(prefix) for k in safetensors_tensor_bytes(file) if k.startswith(prefix)}

    assert keys("fp") == {"weight"}
    assert keys("bnb_int8") == {"weight", "SCB", "weight_format"}
    assert keys("bnb_nf4") == {"weight", "weight.absmax", "weight.quant_map", "weight.quant_state.bitsandbytes__nf4"}
    assert keys("gptq_w4_g32") == keys("rtn_w2_g32") == {"qweight", "qzeros", "scales", "g_idx"}
    assert keys("awq_w4_g32") == {"qweight", "qzeros", "scales"}
    assert keys("hqq_w4_g32") == keys("hqq_w3_g32") == {"W_q", "scale", "zero"}
    assert keys("torchao_int8") == keys("torchao_int4_w4_g32") == {
        "_weight_qdata", "_weight_scale", "_weight_zero_point",
    }  # fmt: skip


def test_quantization_leaves_no_files_in_working_directory(quantized):
    assert quantized[1] == []


@pytest.mark.parametrize("name", EIGHT_BIT)
def test_eight_bit_stays_close_to_full_precision(variants, name):
    run = variants[name]
    assert run.diff < 0.02, f"{name}: mean |logit diff| is {run.diff:.2%} of the mean |logit|"
    assert run.agree >= 0.95


def test_two_bit_rtn_degrades_measurably(variants):
    worst_eight_bit = max(variants[n].diff for n in EIGHT_BIT)
    assert variants["rtn_w2_g32"].diff > 5 * worst_eight_bit
    assert variants["fp"].diff == 0


# --- footprint ------------------------------------------------------------------------------


def _layer_bits(variants, name: str) -> dict[str, tuple[int, int]]:
    return {layer.name: (layer.weights, layer.bits) for layer in footprint(variants[name].dir).layers}


@pytest.mark.parametrize(
    "name, bits, zero_bits, g_idx",
    [("gptq_w4_g32", 4, 4, True), ("rtn_w2_g32", 2, 2, True), ("gptq_w8_g32", 8, 8, True), ("awq_w4_g32", 4, 4, False)],
)
def test_effective_bits_of_group_formats_are_exact(variants, name, bits, zero_bits, g_idx):
    """Per layer: b bits per weight, an fp16 scale and a b-bit zero point per group of 32,
    and for the GPTQ format one int32 group index per input column (32/out_features)."""
    layers = _layer_bits(variants, name)
    assert len(layers) == 7 * SHAPE.num_layers  # q k v o gate up down; never lm_head
    for layer_name, (weights, stored) in layers.items():
        in_features = SHAPE.intermediate_size if layer_name.endswith("down_proj") else SHAPE.hidden_size
        out_features = weights // in_features
        expected = bits + (16 + zero_bits) / 32 + (32 / out_features if g_idx else 0)
        assert stored / weights == expected, layer_name
    if name == "awq_w4_g32":
        assert footprint(variants[name].dir).effective_bits == 4 + (16 + 4) / 32


def _in_features(layer_name: str) -> int:
    return SHAPE.intermediate_size if layer_name.endswith("down_proj") else SHAPE.hidden_size


@pytest.mark.parametrize("name, bits", [("hqq_w8_g32", 8), ("hqq_w4_g32", 4)])
def test_effective_bits_of_hqq_are_exact(variants, name, bits):
    """hqq packs 8- and 4-bit codes into bytes; a float16 scale and a float16 (non-integer)
    zero point per group of 32."""
    for layer_name, (weights, stored) in _layer_bits(variants, name).items():
        assert stored / weights == bits + (16 + 16) / 32, layer_name


def test_effective_bits_of_hqq_three_bit_packing(variants):
    """hqq's 3-bit packing puts ten codes of one group column in an int32: the groups of 32
    (rows of the [weights / 32, 32] grid) are padded to a multiple of 10."""
    for layer_name, (weights, stored) in _layer_bits(variants, "hqq_w3_g32").items():
        groups = weights // 32
        assert stored == 32 * 32 * -(-groups // 10) + 32 * groups, layer_name
    assert 3.2 < footprint(variants["hqq_w3_g32"].dir).effective_bits < 4.3


def test_effective_bits_of_torchao(variants):
    """torchao int8 per row: int8 codes, a float32 scale and an int8 zero point per row. Its
    saveable CPU int4 format keeps each 4-bit code in an int8 byte, with a float32 scale and
    an int8 zero point per group of 32: 8 + 40/32 bits, not 4."""
    for layer_name, (weights, stored) in _layer_bits(variants, "torchao_int8").items():
        rows = weights // _in_features(layer_name)
        assert stored == 8 * weights + (32 + 8) * rows, layer_name
    for _, (weights, stored) in _layer_bits(variants, "torchao_int4_w4_g32").items():
        assert stored / weights == 8 + (32 + 8) / 32


def test_four_bit_grids_lose_more_than_eight_bit(variants):
    for four, eight in (("hqq_w4_g32", "hqq_w8_g32"), ("torchao_int4_w4_g32", "torchao_int8")):
        assert variants[four].diff > 2 * variants[eight].diff


def test_effective_bits_of_bitsandbytes_and_fp(variants):
    fp = footprint(variants["fp"].dir)
    assert fp.effective_bits == 32
    for layer_name, (weights, stored) in _layer_bits(variants, "bnb_int8").items():
        rows = SHAPE.intermediate_size if "gate" in layer_name or "up_proj" in layer_name else SHAPE.hidden_size
        # int8 weights, an fp32 scale per output row (SCB), one byte of format tag
        assert stored == 8 * weights + 32 * rows + 8, layer_name
    for layer_name, (weights, stored) in _layer_bits(variants, "bnb_nf4").items():
        # 4-bit codes, an fp32 absmax per block of 64, a 16-entry fp32 code book, the quant state as JSON
        in_features = SHAPE.intermediate_size if layer_name.endswith("down_proj") else SHAPE.hidden_size
        shape = [weights // in_features, in_features]
        state = {"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": shape}
        assert stored == 4 * weights + 32 * weights // 64 + 16 * 32 + 8 * len(json.dumps(state)), layer_name
    for name in [s.name for s in VARIANTS if s.name != "fp"]:
        fpr = footprint(variants[name].dir)
        assert fpr.storage_bytes < fp.storage_bytes
        assert fpr.storage_bytes == sum(f.stat().st_size for f in variants[name].dir.glob("*.safetensors"))


# --- validation -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config(source):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source[0])


def test_default_names():
    assert [s.name for s in VARIANTS] == [
        "fp", "bnb_int8", "bnb_nf4", "bnb_fp4", "gptq_w8_g32", "gptq_w4_g32", "awq_w4_g32", "rtn_w8_g32", "rtn_w2_g32",
        "hqq_w8_g32", "hqq_w4_g32", "hqq_w3_g32", "torchao_int8", "torchao_int4_w4_g32",
    ]  # fmt: skip
    assert variant_name("gptq", 3, -1) == "gptq_w3_perchannel"
    assert variant_name("gptq", 4, 128, sym=True, desc_act=True) == "gptq_w4_g128_sym_descact"
    assert variant_name("awq", 4, 32, awq_gqa="average") == "awq_w4_g32_gqaavg"
    assert VariantSpec(method="awq", group_size=32, awq_gqa="average").name == "awq_w4_g32_gqaavg"
    assert VariantSpec(method="gptq").name == "gptq_w4_g128"
    assert set(METHODS) == {
        "fp", "bnb_int8", "bnb_nf4", "bnb_fp4", "gptq", "awq", "rtn", "hqq", "torchao_int8", "torchao_int4",
    }  # fmt: skip
    assert VariantSpec(method="hqq").name == "hqq_w4_g64"
    assert VariantSpec(method="torchao_int8").name == "torchao_int8"
    assert VariantSpec(method="torchao_int4").name == "torchao_int4_w4_g128"


def test_valid_variants_pass(config):
    assert validate_variants(VARIANTS, config, cuda_available=False) == VARIANTS
    validate_variants([VariantSpec(method="gptq", bits=3, group_size=-1)], config, cuda_available=False)


@pytest.mark.parametrize(
    "spec, problem, fix",
    [
        (dict(method="gptqq"), "unknown method 'gptqq'", "use one of fp, bnb_int8, bnb_nf4, bnb_fp4, gptq, awq, rtn, hqq, torchao_int8, torchao_int4"),
        (dict(method="bnb_nf4", bits=3), "does not support 3-bit", "3-bit is offered by gptq, rtn, hqq"),
        (dict(method="bnb_int8", bits=4), "does not support 4-bit", "bits in [8]; 4-bit is offered by bnb_nf4"),
        (dict(method="gptq", bits=5, group_size=32), "does not support 5-bit", "use bits in [2, 3, 4, 8]"),
        (dict(method="awq", bits=3, group_size=32), "does not support 3-bit", "use bits in [4]"),
        (dict(method="rtn", bits=4, group_size=256), "group_size 256 does not divide", "[-1, 16, 32, 64]"),
        (dict(method="gptq", bits=4, group_size=48), "group_size 48 is not supported", "use one of [-1, 16, 32"),
        (dict(method="bnb_nf4", group_size=64), "has no group size", "remove group_size"),
        (dict(method="rtn", bits=4, group_size=32, calibration_size=64), "takes no calibration_size", "remove"),
        (dict(method="awq", group_size=32, desc_act=True), "takes no desc_act", "remove desc_act"),
        (dict(method="gptq", group_size=32, device="cuda"), "needs a CUDA GPU", "set device to 'auto' or 'cpu'"),
        (dict(method="gptq", group_size=32, device="tpu"), "unknown device 'tpu'", "'auto', 'cpu', 'cuda'"),
        (dict(method="hqq", bits=5, group_size=32), "does not support 5-bit", "use bits in [1, 2, 3, 4, 8]"),
        (dict(method="hqq", bits=4, group_size=-1), "group_size -1 is not supported by hqq", "[16, 32, 64"),
        (dict(method="hqq", bits=4, group_size=256), "group_size 256 does not divide", "[16, 32, 64]"),
        (dict(method="torchao_int4", bits=3, group_size=32), "does not support 3-bit", "use bits in [4]"),
        (dict(method="torchao_int4", group_size=48), "group_size 48 is not supported", "use one of [-1, 16"),
        (dict(method="torchao_int8", group_size=32), "has no group size", "remove group_size"),
        (dict(method="hqq", group_size=32, sym=True), "takes no sym", "remove sym"),
        (dict(method="gptq", group_size=32, awq_gqa="skip"), "takes no awq_gqa", "remove awq_gqa"),
        # The test model has no grouped-query attention (4 heads, 4 key-value heads).
        (dict(method="awq", group_size=32, awq_gqa="average"), "has none (4 attention heads, 4 key-value", "remove awq_gqa"),
        (dict(method="fp", name="fp.full"), "not a valid Kedro namespace", "letters, digits and underscores"),
    ],
)
def test_bad_variants_fail_naming_variant_and_fix(config, spec, problem, fix):
    spec = VariantSpec(**spec)
    with pytest.raises(VariantError) as error:
        validate_variants([VariantSpec(method="fp"), spec], config, cuda_available=False)
    message = str(error.value)
    assert message.startswith(f"variant {spec.name!r}: ")
    assert problem in message and fix in message


def test_layer_widths_can_be_given_directly():
    spec = VariantSpec(method="gptq", bits=4, group_size=64)
    with pytest.raises(VariantError, match=r"not divisible: \[96\]"):
        validate_variants([spec], [128, 96], cuda_available=False)


def test_bnb_4bit_on_cpu_needs_widths_of_its_block():
    for method in ("bnb_nf4", "bnb_fp4"):
        with pytest.raises(VariantError, match=r"multiple of 64 \(not: \[96\]\).*CUDA GPU"):
            validate_variants([VariantSpec(method=method)], [128, 96], cuda_available=False)
        validate_variants([VariantSpec(method=method)], [128, 96], cuda_available=True)
    validate_variants([VariantSpec(method="bnb_int8")], [128, 96], cuda_available=False)


def test_duplicate_names_fail(config):
    with pytest.raises(VariantError, match="'rtn_w4_g32' is listed twice"):
        validate_variants([VariantSpec(method="rtn", group_size=32)] * 2, config, cuda_available=False)


def test_quantize_validates_and_needs_enough_calibration_texts(source, tmp_path):
    source_dir, texts = source
    with pytest.raises(VariantError, match="does not support 5-bit"):
        quantize(source_dir, VariantSpec(method="rtn", bits=5, group_size=32), texts, tmp_path / "x")
    spec = VariantSpec(method="gptq", group_size=32, calibration_size=len(texts) + 1, device="cpu")
    with pytest.raises(ValueError, match=f"asks for {len(texts) + 1} calibration texts but only {len(texts)}"):
        quantize(source_dir, spec, texts, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_gptqmodel_progress_animation_is_off_without_a_terminal(monkeypatch):
    from fkr_kedro.quantization.gptq import _no_animation_without_terminal

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # a log file, a Slurm job's output
    with _no_animation_without_terminal():
        assert os.environ["TERM"] == "dumb"  # logbar's signal for "no terminal": no redraws
    assert os.environ["TERM"] == "xterm"
    monkeypatch.setattr(sys, "stdout", Terminal())
    with _no_animation_without_terminal():
        assert os.environ["TERM"] == "xterm"
    monkeypatch.delenv("TERM")
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    with _no_animation_without_terminal():
        assert os.environ["TERM"] == "dumb"
    assert "TERM" not in os.environ
