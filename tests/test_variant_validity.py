"""Every variant is what its name says (issue 20), on tiny random Llamas on the CPU:

* calibration runs in the source's dtype and stops, naming the layer, when activations are
  not finite; it never yields a GPTQ variant with RTN modules unreported;
* the method each module actually got is read from GPTQModel's own log, recorded in
  variant.json and summed up in the footprint; above ``max_fallback_fraction`` the variant fails;
* every variant records the dtype its activations are computed in, and loads in it;
* non-embedding parameters count a tied embedding once.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fkr_kedro.modeling.load import CausalLM
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import non_embedding_parameters
from fkr_kedro.quantization import VariantError, VariantSpec, footprint, load_quantized, quantize, validate_variants
from fkr_kedro.quantization.gptq import (
    CalibrationError,
    check_fallbacks,
    fallback_fraction,
    gptqmodel,
    module_methods,
    run_gptqmodel,
)

CALIBRATION = 16
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def _texts() -> list[str]:
    rng = random.Random(0)
    people, cities = [f"p{i}" for i in range(20)], [f"c{i}" for i in range(8)]
    return [f"{a} lives in {rng.choice(cities)} and knows {b}" for a in people for b in rng.sample(people, 3)]


def _save_tiny(path: Path, dtype: torch.dtype = torch.float32, edit=None) -> Path:
    """A random 2-layer Llama of width 64 and its word tokenizer, saved in ``dtype``."""
    texts = _texts()
    tokenizer = build_word_tokenizer(texts)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    if edit is not None:
        with torch.no_grad():
            edit(model, tokenizer(texts, return_tensors="pt", padding=True))
    CausalLM(model.to(dtype), tokenizer).save(path)
    return path


def _names(layers: int = 2) -> list[str]:
    return [f"model.layers.{i}.{m}" for i in range(layers) for m in LINEARS]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("source"))


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


# --- the method each module got, from the quantizer's log ----------------------------------


def _entry(layer: int, module: str, loss: str, process: str = "gptq") -> dict:
    return {"process": process, "layer": layer, "module": module, "loss": loss, "samples": "128"}


def test_fallback_line_of_a_log_is_a_fallback_module():
    """A log as GPTQModel 7.0.0 returns it, one module given to its RTN fallback (the loss
    column reads 'rtn fallback' when the Hessian stayed non positive-definite)."""
    log = {"gptq": [_entry(i, m, "0.0000605294") for i in range(2) for m in LINEARS]}
    log["gptq"][11] = _entry(1, "mlp.gate_proj", "rtn fallback")
    methods = module_methods(log, _names())
    assert methods["model.layers.1.mlp.gate_proj"] == "rtn_fallback"
    assert sum(m == "gptq" for m in methods.values()) == 13
    assert fallback_fraction("gptq", methods) == pytest.approx(1 / 14)


def test_low_sample_fallback_line_is_a_fallback_module():
    log = [_entry(0, m, "fallback(rtn): 0.0012345") for m in LINEARS]
    assert set(module_methods(log, _names(1)).values()) == {"rtn_fallback"}


def test_unlogged_and_nonfinite_modules_are_not_the_method():
    log = [_entry(0, m, "nan") if m == "self_attn.q_proj" else _entry(0, m, "0.1") for m in LINEARS]
    methods = module_methods(log, _names())
    assert methods["model.layers.0.self_attn.q_proj"] == "nonfinite"
    assert all(methods[n] == "skipped" for n in _names() if ".1." in n)
    assert fallback_fraction("gptq", methods) == pytest.approx(8 / 14)


def test_more_fallback_than_allowed_fails_naming_the_variant_and_fix():
    methods = dict.fromkeys(_names(), "gptq") | {"model.layers.1.mlp.up_proj": "rtn_fallback"}
    with pytest.raises(CalibrationError, match=r"gptq_w4_g32.*7\.1%.*rtn_fallback.*max_fallback_fraction"):
        check_fallbacks(VariantSpec(method="gptq", bits=4, group_size=32), methods)
    check_fallbacks(VariantSpec(method="gptq", bits=4, group_size=32, max_fallback_fraction=0.1), methods)


def test_max_fallback_fraction_is_validated():
    widths = [64, 128]
    with pytest.raises(VariantError, match="rtn_w4_g32.*takes no max_fallback_fraction"):
        validate_variants([VariantSpec(method="rtn", bits=4, group_size=32, max_fallback_fraction=0.1)], widths)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        VariantSpec(method="gptq", max_fallback_fraction=2)


def _forced_fallback(source: Path, out: Path, spec: VariantSpec) -> dict:
    """GPTQ through GPTQModel with its low-sample fallback threshold set above the tokens
    any module sees, so GPTQModel itself quantizes every module by RTN and logs it."""
    gm = gptqmodel()
    config = gm.GPTQConfig(
        bits=4, group_size=32, offload_to_disk=False, fallback=gm.quantization.Fallback(threshold=10**9)
    )
    return run_gptqmodel(source, config, _texts()[:CALIBRATION], out, spec)


def test_real_gptqmodel_fallback_fails_the_variant(source, tmp_path, in_tmp_cwd):
    spec = VariantSpec(method="gptq", bits=4, group_size=32, calibration_size=CALIBRATION, device="cpu")
    with pytest.raises(CalibrationError, match=r"100\.0% of its 14 .*did not get gptq.*rtn_fallback.*max_fallback"):
        _forced_fallback(source, tmp_path / "v", spec)
    assert not (tmp_path / "v").exists()


def test_real_gptqmodel_fallback_is_recorded_when_allowed(source, tmp_path, in_tmp_cwd):
    spec = VariantSpec(
        method="gptq", bits=4, group_size=32, calibration_size=CALIBRATION, device="cpu", max_fallback_fraction=1.0
    )
    out = tmp_path / "v"
    facts = _forced_fallback(source, out, spec)
    assert sorted(facts["modules"]) == sorted(_names())
    assert set(facts["modules"].values()) == {"rtn_fallback"}
    (out / "variant.json").write_text(json.dumps(facts))  # the part of variant.json quantize() adds
    size = footprint(out).as_dict()
    assert size["modules.rtn_fallback_fraction"] == 1.0 and size["modules.gptq_fraction"] == 0.0


# --- calibration in the source's dtype; non-finite activations stop it --------------------


def _overflow_residual(model, batch):
    """Scale layer 0's MLP (gate, up and down by one factor) until the residual stream peaks
    near 1e6: finite in float32 and bfloat16, far beyond float16's 65,504, while every
    weight stays representable in float16."""
    mlp = model.model.layers[0].mlp
    for _ in range(3):
        peak = model(**batch, output_hidden_states=True).hidden_states[1].abs().max().item()
        factor = (1e6 / peak) ** (1 / 3)
        for linear in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            linear.weight.mul_(factor)
    peak = model(**batch, output_hidden_states=True).hidden_states[1].abs().max().item()
    assert 2e5 < peak < 1e7 and max(p.abs().max() for p in mlp.parameters()) < 6e4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_residual_beyond_float16_calibrates_in_its_dtype_or_stops(dtype, tmp_path, in_tmp_cwd):
    source = _save_tiny(tmp_path / "source", dtype, edit=_overflow_residual)
    spec = VariantSpec(method="gptq", bits=4, group_size=32, calibration_size=CALIBRATION, device="cpu")
    out = tmp_path / "v"
    if dtype == torch.float16:
        with pytest.raises(CalibrationError, match=r"decoder layer 0 produced non-finite.*float16.*float32 or bfloat16"):
            quantize(source, spec, _texts(), out)
        assert not out.exists()
        return
    quantize(source, spec, _texts(), out)
    record = json.loads((out / "variant.json").read_text())
    assert record["compute_dtype"] == "float32"
    assert set(record["modules"].values()) == {"gptq"}, record["modules"]
    lm = load_quantized(out, device="cpu")
    with torch.no_grad():
        logits = lm.model(**lm.tokenizer(_texts()[:4], return_tensors="pt", padding=True)).logits
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


# --- one compute dtype per comparison ------------------------------------------------------


@pytest.fixture(scope="module")
def dtype_variants(source, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dtype_variants")
    specs = [
        VariantSpec(method="fp", device="cpu"),
        VariantSpec(method="fp", dtype="bfloat16", device="cpu"),
        VariantSpec(method="bnb_int8", device="cpu"),
        VariantSpec(method="gptq", bits=4, group_size=32, calibration_size=CALIBRATION, device="cpu"),
        VariantSpec(method="awq", bits=4, group_size=32, calibration_size=CALIBRATION, device="cpu"),
        VariantSpec(method="rtn", bits=4, group_size=32, device="cpu"),
    ]
    for spec in specs:
        quantize(source, spec, _texts(), root / spec.name)
    return {spec.name: root / spec.name for spec in specs}


def test_variants_record_and_load_in_one_compute_dtype(dtype_variants):
    """Every variant of a float32 source computes in float32, but the bf16 reference."""
    batch_texts = _texts()[:4]
    for name, path in dtype_variants.items():
        record = json.loads((path / "variant.json").read_text())
        expected = "bfloat16" if name == "fp_bf16" else "float32"
        assert record["compute_dtype"] == expected, name
        lm = load_quantized(path, device="cpu")
        with torch.no_grad():
            hidden = lm.model(**lm.tokenizer(batch_texts, return_tensors="pt", padding=True), output_hidden_states=True)
        assert hidden.hidden_states[-1].dtype == getattr(torch, expected), name
        size = footprint(path).as_dict()
        assert size["compute_dtype_bits"] == (16 if name == "fp_bf16" else 32), name
        assert size["compute_dtype_mantissa_bits"] == (7 if name == "fp_bf16" else 23), name


def test_every_variant_reports_the_method_of_each_module(dtype_variants):
    expected = {"fp": "full_precision", "fp_bf16": "full_precision", "bnb_int8": "bnb",
                "gptq_w4_g32": "gptq", "awq_w4_g32": "awq", "rtn_w4_g32": "rtn"}
    for name, path in dtype_variants.items():
        size = footprint(path).as_dict()
        assert size[f"modules.{expected[name]}_fraction"] == 1.0, name
        assert size["modules.rtn_fallback_fraction"] == 0.0, name
        assert sum(v for k, v in size.items() if k.startswith("modules.")) == pytest.approx(1.0)


def test_dequantized_weights_are_the_stored_grid(dtype_variants):
    """The float32 weights of a reloaded 4-bit GPTQ/RTN variant take at most 16 values per
    group of 32 inputs (its 4-bit grid), and differ from the source's."""
    fp = load_quantized(dtype_variants["fp"], device="cpu").model
    for name in ("gptq_w4_g32", "rtn_w4_g32", "awq_w4_g32"):
        model = load_quantized(dtype_variants[name], device="cpu").model
        w = model.model.layers[1].mlp.down_proj.weight
        assert w.dtype == torch.float32
        groups = w.reshape(w.shape[0], -1, 32)
        assert max(len(torch.unique(groups[r, g])) for r in range(4) for g in range(groups.shape[1])) <= 16, name
        assert not torch.equal(w, fp.model.layers[1].mlp.down_proj.weight), name


def test_fp_dtype_names_the_reference():
    assert VariantSpec(method="fp", dtype="bfloat16").name == "fp_bf16"
    with pytest.raises(VariantError, match="unknown dtype 'half'"):
        validate_variants([VariantSpec(method="fp", dtype="half")], [64])
    with pytest.raises(VariantError, match="takes no dtype"):
        validate_variants([VariantSpec(method="gptq", bits=4, group_size=32, dtype="bfloat16")], [64])


# --- parameter counts ------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_non_embedding_parameters_count_a_tied_embedding_once(tied):
    """Vocabulary 10, width 4, MLP 8, one layer, no biases: attention 4 x 4x4 = 64, MLP
    3 x 4x8 = 96, two layer norms 8, final norm 4: 172 outside the embeddings (10x4 = 40
    each), whether the unembedding is the embedding (212 in all) or its own (252)."""
    config = LlamaConfig(
        vocab_size=10, hidden_size=4, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, tie_word_embeddings=tied,
    )
    model = LlamaForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == (212 if tied else 252)
    assert non_embedding_parameters(model) == 172


def test_calibrated_four_bit_is_no_worse_than_round_to_nearest(dtype_variants):
    """GPTQ and AWQ at 4 bits stay within twice RTN's logit error on calibration texts (AWQ
    calibrated in float32 by GPTQModel 7.0.0 was 20x worse: see gptq.calibration_dtype)."""
    texts = _texts()[:CALIBRATION]

    def logits(name):
        lm = load_quantized(dtype_variants[name], device="cpu")
        with torch.no_grad():
            return lm.model(**lm.tokenizer(texts, return_tensors="pt", padding=True)).logits.float()

    ref = logits("fp")
    error = {n: ((logits(n) - ref).abs().mean() / ref.abs().mean()).item() for n in ("gptq_w4_g32", "awq_w4_g32", "rtn_w4_g32")}
    assert error["gptq_w4_g32"] < 2 * error["rtn_w4_g32"], error
    assert error["awq_w4_g32"] < 2 * error["rtn_w4_g32"], error
    record = json.loads((dtype_variants["awq_w4_g32"] / "variant.json").read_text())
    assert record["calibration_dtype"] == "bfloat16" and record["compute_dtype"] == "float32"
