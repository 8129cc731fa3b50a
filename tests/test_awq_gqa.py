"""AWQ under grouped-query attention (issue 33), on tiny random models built offline from
transformers configs (a Qwen2 with v_proj bias and an untied head, a Llama; 4 attention
heads sharing 2 key-value heads), on the CPU:

* GPTQModel 7.0.0 leaves o_proj unscaled under GQA, the reference AWQ's rule: recorded as
  ``awq_unscaled_gqa`` with a note, counted as AWQ, so AWQ passes at max_fallback_fraction 0;
  without GQA an unscaled o_proj still fails the variant;
* ``awq_gqa: average`` scales o_proj by its AWQ scale averaged over each key-value head's
  query heads and folds it into v_proj: before quantization the model computes the same
  logits with other weights; end to end it quantizes, records itself and reloads;
* the report names the rule and does not count it as "not by its method".
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from fkr_kedro.modeling.load import CausalLM, load_causal_lm
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.quantization import VariantError, VariantSpec, footprint, load_quantized, quantize, validate_variants
from fkr_kedro.quantization.api import variant_fingerprint
from fkr_kedro.quantization.awq_gqa import (
    _collect_inputs,
    average_over_repeats,
    expand_over_repeats,
    gqa_attentions,
    gqa_average_prescale,
    is_gqa,
    label_gqa_rule,
    pseudo_quantize,
    scale_gqa_average,
    search_gqa_scale,
)
from fkr_kedro.quantization.gptq import CalibrationError, check_fallbacks, fallback_fraction, module_methods

CALIBRATION = 16
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# Width 128, 4 heads of 32 sharing 2 key-value heads: v_proj writes 64 features (GPTQModel's
# AWQ clipping needs output rows in multiples of 64), o_proj reads 128.
GQA = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
ARCHITECTURES = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}


def _texts() -> list[str]:
    rng = random.Random(0)
    people, cities = [f"p{i}" for i in range(20)], [f"c{i}" for i in range(8)]
    return [f"{a} lives in {rng.choice(cities)} and knows {b}" for a in people for b in rng.sample(people, 3)]


def _model(kind: str, **shape) -> tuple[torch.nn.Module, object]:
    """A random tiny model of ``kind`` with an untied head and the word tokenizer; Qwen2's
    v_proj bias (zero at init) is drawn at random so that its scaling is tested too."""
    tokenizer = build_word_tokenizer(_texts())
    config_class, model_class = ARCHITECTURES[kind]
    config = config_class(
        vocab_size=len(tokenizer), max_position_embeddings=32, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        **{**GQA, **shape},
    )
    torch.manual_seed(0)
    model = model_class(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("v_proj.bias"):
                param.normal_(0, 0.1)
    return model, tokenizer


def _save(path: Path, kind: str, **shape) -> Path:
    model, tokenizer = _model(kind, **shape)
    CausalLM(model, tokenizer).save(path)
    return path


def _names(layers: int = 2) -> list[str]:
    return [f"model.layers.{i}.{m}" for i in range(layers) for m in LINEARS]


def _batches(tokenizer, texts: list[str]):
    return (tokenizer(t, return_tensors="pt") for t in texts)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gqa_sources")
    return {kind: _save(root / kind, kind) for kind in ARCHITECTURES}


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


# --- the layout and the known answer ---------------------------------------------------------


def test_average_and_expansion_follow_repeat_kv():
    """o_proj feature h*head_dim + d reads key-value head h // n_rep (transformers' repeat_kv)."""
    kv, n_rep, head_dim = 2, 3, 4
    scale = torch.arange(kv * n_rep * head_dim, dtype=torch.float32)
    averaged = average_over_repeats(scale, kv, n_rep, head_dim)
    for k in range(kv):
        for d in range(head_dim):
            group = [scale[(k * n_rep + r) * head_dim + d] for r in range(n_rep)]
            assert averaged[k * head_dim + d] == pytest.approx(sum(group) / n_rep)
    full = expand_over_repeats(averaged, kv, n_rep, head_dim)
    for h in range(kv * n_rep):
        for d in range(head_dim):
            assert full[h * head_dim + d] == averaged[(h // n_rep) * head_dim + d]


@pytest.mark.parametrize("kind", list(ARCHITECTURES))
def test_averaged_scaling_keeps_the_logits_and_changes_the_weights(kind):
    model, tokenizer = _model(kind)
    batch = tokenizer(_texts()[:8], return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**batch).logits
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    found = scale_gqa_average(model, _batches(tokenizer, _texts()[:CALIBRATION]), bits=4, group_size=32, sym=False)
    with torch.no_grad():
        after = model(**batch).logits
    assert sorted(found) == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, weights[k])}
    expected = {f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("v_proj.weight", "o_proj.weight")}
    if kind == "qwen2":
        expected |= {f"model.layers.{i}.self_attn.v_proj.bias" for i in range(2)}
    assert changed == expected
    for search in found.values():
        assert (search.kv_scale - 1).abs().max() > 0.05  # a real scale, not the identity
        assert search.kv_scale.numel() == 2 * 32  # one per v_proj output row


def test_a_wrong_head_layout_changes_the_logits():
    """The known answer can fail: the same per-key-value-head scale expanded as
    ``s.repeat(n_rep)`` (heads interleaved the other way) changes the model's function."""
    model, tokenizer = _model("qwen2")
    batch = tokenizer(_texts()[:8], return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**batch).logits
        attention = gqa_attentions(model)[0]
        kv_scale = torch.linspace(0.5, 2.0, attention.v_proj.out_features)
        attention.v_proj.weight.div_(kv_scale[:, None])
        attention.v_proj.bias.div_(kv_scale)
        attention.o_proj.weight.mul_(kv_scale.repeat(attention.n_rep)[None, :])
        wrong = model(**batch).logits
    assert (wrong - before).abs().max() > 1e-3


def test_search_scores_the_output_error_of_the_applied_scale():
    """The Gram-matrix loss equals the mean squared o_proj output error computed directly."""
    model, tokenizer = _model("llama")
    attention = gqa_attentions(model)[1]
    inputs = []
    handle = attention.o_proj.register_forward_pre_hook(
        lambda module, args: inputs.append(args[0].reshape(-1, args[0].shape[-1]))
    )
    stats = _collect_inputs(model, [attention], _batches(tokenizer, _texts()[:CALIBRATION]))[0]
    handle.remove()
    x = torch.cat(inputs)
    found = search_gqa_scale(attention, stats, bits=4, group_size=32, sym=False)
    w = attention.o_proj.weight.float()
    full = expand_over_repeats(found.kv_scale, attention.num_kv_heads, attention.n_rep, attention.head_dim)
    direct = ((x @ (pseudo_quantize(w * full, 4, 32, False) / full).T - x @ w.T) ** 2).mean().item()
    unscaled = ((x @ pseudo_quantize(w, 4, 32, False).T - x @ w.T) ** 2).mean().item()
    assert found.loss == pytest.approx(direct, rel=1e-3)
    assert found.loss_unscaled == pytest.approx(unscaled, rel=1e-3)


def test_gqa_is_read_from_the_config():
    assert is_gqa(Qwen2Config(**GQA))
    assert not is_gqa(LlamaConfig(**{**GQA, "num_key_value_heads": 4}))
    assert not is_gqa(LlamaConfig(hidden_size=64, num_attention_heads=4))  # no num_key_value_heads given


# --- what the log becomes in variant.json --------------------------------------------------


def _awq_log(layers: int = 2) -> list[dict]:
    """GPTQModel 7.0.0's AWQ log: a loss per scaled module, "not applicable" for o_proj."""
    return [
        {"process": "awq", "layer": i, "module": m, "loss": "not applicable" if m.endswith("o_proj") else "0.0001"}
        for i in range(layers) for m in LINEARS
    ]


def test_unscaled_o_proj_is_the_rule_under_gqa_only():
    modules = module_methods(_awq_log(), _names())
    assert modules["model.layers.0.self_attn.o_proj"] == "awq_unscaled"
    spec = VariantSpec(method="awq", bits=4, group_size=32)

    gqa, notes = label_gqa_rule(modules, Qwen2Config(**GQA))
    o_proj = {f"model.layers.{i}.self_attn.o_proj" for i in range(2)}
    assert {n for n, m in gqa.items() if m == "awq_unscaled_gqa"} == o_proj
    assert notes == ["o_proj unscaled under grouped-query attention (2 of 14 modules), as in the reference AWQ"]
    assert fallback_fraction("awq", gqa) == 0.0
    check_fallbacks(spec, gqa)  # max_fallback_fraction 0

    # The same log from a model without GQA: an unscaled o_proj is not the method.
    mha, notes = label_gqa_rule(modules, LlamaConfig(**{**GQA, "num_key_value_heads": 4}))
    assert mha == modules and notes == []
    assert fallback_fraction("awq", mha) == pytest.approx(2 / 14)
    with pytest.raises(CalibrationError, match=r"awq_w4_g32.*14\.3%.*awq_unscaled.*this model has none"):
        check_fallbacks(spec, mha)


def test_only_o_proj_gets_the_rule():
    log = _awq_log()
    log[0]["loss"] = "not applicable"  # q_proj of layer 0 without a scale: a fallback, not the rule
    modules, _ = label_gqa_rule(module_methods(log, _names()), Qwen2Config(**GQA))
    assert modules["model.layers.0.self_attn.q_proj"] == "awq_unscaled"
    assert fallback_fraction("awq", modules) == pytest.approx(1 / 14)


def test_without_gqa_gptqmodel_unscaled_o_proj_fails_the_variant(tmp_path, in_tmp_cwd):
    """A Llama without GQA whose heads are wider than the model (4 x 32 on width 64):
    v_proj and o_proj differ in shape, GPTQModel skips the scaling, and the variant fails."""
    source = _save(
        tmp_path / "source", "llama", hidden_size=64, intermediate_size=128, num_key_value_heads=4, head_dim=32
    )
    spec = VariantSpec(method="awq", bits=4, group_size=32, calibration_size=CALIBRATION, device="cpu")
    with pytest.raises(CalibrationError, match=r"14\.3% of its 14 .*'awq_unscaled': 2.*self_attn\.o_proj"):
        quantize(source, spec, _texts(), tmp_path / "v")
    assert not (tmp_path / "v").exists()


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ARCHITECTURES))
def test_awq_on_gqa_passes_and_records_the_rule(sources, kind, tmp_path, in_tmp_cwd):
    spec = VariantSpec(method="awq", bits=4, group_size=32, calibration_size=CALIBRATION, device="cpu")
    assert spec.max_fallback_fraction == 0.0
    out = tmp_path / spec.name
    quantize(sources[kind], spec, _texts(), out)
    record = json.loads((out / "variant.json").read_text())
    o_proj = {f"model.layers.{i}.self_attn.o_proj" for i in range(2)}
    assert record["modules"] == {n: "awq_unscaled_gqa" if n in o_proj else "awq" for n in _names()}
    assert record["notes"] == [
        "o_proj unscaled under grouped-query attention (2 of 14 modules), as in the reference AWQ"
    ]
    assert "awq_gqa" not in record and "awq_gqa_search" not in record  # the default, as before the option
    size = footprint(out).as_dict()
    assert size["quantized_modules"] == 14
    assert size["modules.awq_fraction"] == pytest.approx(12 / 14)
    assert size["modules.awq_unscaled_gqa_fraction"] == pytest.approx(2 / 14)
    assert size["modules.other_fraction"] == 0.0 and size["modules.rtn_fallback_fraction"] == 0.0
    assert sum(v for k, v in size.items() if k.startswith("modules.")) == pytest.approx(1.0)


@pytest.mark.parametrize("kind", list(ARCHITECTURES))
def test_average_option_runs_end_to_end_and_records_itself(sources, kind, tmp_path, in_tmp_cwd):
    spec = VariantSpec(
        method="awq", bits=4, group_size=32, calibration_size=CALIBRATION, device="cpu", awq_gqa="average"
    )
    assert spec.name == "awq_w4_g32_gqaavg"
    out = tmp_path / spec.name
    quantize(sources[kind], spec, _texts(), out)
    record = json.loads((out / "variant.json").read_text())
    assert record["awq_gqa"] == "average"
    o_proj = {f"model.layers.{i}.self_attn.o_proj" for i in range(2)}
    assert record["modules"] == {n: "awq_gqa_average" if n in o_proj else "awq" for n in _names()}
    assert record["notes"] == [
        "o_proj scaled by its AWQ scale averaged over each key-value head's query heads (2 of 14 modules; "
        "awq_gqa: average)"
    ]
    search = record["awq_gqa_search"]
    assert sorted(search) == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    assert all(0 <= s["ratio"] < 1 and s["loss"] > 0 and s["loss_unscaled"] > 0 for s in search.values())
    size = footprint(out).as_dict()
    assert size["modules.awq_gqa_average_fraction"] == pytest.approx(2 / 14) and size["modules.other_fraction"] == 0

    # GPTQModel quantized the pre-scaled weights: the stored o_proj is the scaled one's grid.
    scaled, _ = gqa_average_prescale(sources[kind], _texts()[:CALIBRATION], 4, 32, False)
    original = load_causal_lm(sources[kind], device="cpu").model.state_dict()
    lm = load_quantized(out, device="cpu")
    stored = lm.model.state_dict()
    for name in (f"model.layers.{i}.self_attn.o_proj.weight" for i in range(2)):
        assert (stored[name] - scaled[name]).norm() < (stored[name] - original[name]).norm()
    batch = lm.tokenizer(_texts()[:4], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.isfinite(lm.model(**batch).logits).all()


# --- the option's validation and fingerprint -----------------------------------------------


def test_awq_gqa_is_validated():
    config = Qwen2Config(**GQA)
    with pytest.raises(VariantError, match="gptq_w4_g32.*takes no awq_gqa option.*remove awq_gqa"):
        validate_variants([VariantSpec(method="gptq", group_size=32, awq_gqa="average")], config, cuda_available=False)
    with pytest.raises(ValueError, match="'skip' or 'average'"):
        VariantSpec(method="awq", group_size=32, awq_gqa="mean")
    mha = LlamaConfig(**{**GQA, "num_key_value_heads": 4})
    none = r"awq_w4_g32_gqaavg.*'average' is for grouped-query attention and the model has none.*remove awq_gqa"
    with pytest.raises(VariantError, match=none):
        validate_variants([VariantSpec(method="awq", group_size=32, awq_gqa="average")], mha, cuda_available=False)
    validate_variants([VariantSpec(method="awq", group_size=32, awq_gqa="average")], config, cuda_available=False)
    validate_variants([VariantSpec(method="awq", group_size=32, awq_gqa="skip")], mha, cuda_available=False)


def test_default_awq_gqa_leaves_fingerprints_as_before(sources):
    """Variants written before the option existed keep their fingerprint (same bytes);
    ``average`` is part of it."""
    skip = VariantSpec(method="awq", group_size=32)
    assert "awq_gqa" not in skip.model_dump() and "awq_gqa" not in variant_fingerprint(sources["llama"], skip, _texts())
    assert "awq_gqa" not in VariantSpec(method="gptq", group_size=32).model_dump()
    assert VariantSpec(method="awq", group_size=32, awq_gqa="average").model_dump()["awq_gqa"] == "average"


# --- the report --------------------------------------------------------------------------------


def test_report_names_the_rule_and_does_not_count_it():
    from fkr_kedro.reporting.findings import _dtypes_and_fallbacks, _not_by_method

    info = pd.DataFrame(
        {
            "compute_dtype_bits": [32, 32, 32],
            "compute_dtype_mantissa_bits": [23, 23, 23],
            "quantized_modules": [210, 210, 210],
            "modules.rtn_fallback_fraction": [0.0, 0.0, 0.0],
            "modules.other_fraction": [0.0, 0.0, 0.0],
            "modules.awq_unscaled_gqa_fraction": [0.0, 30 / 210, 0.0],
            "modules.awq_gqa_average_fraction": [0.0, 0.0, 30 / 210],
        },
        index=["fp", "awq_w4_g32", "awq_w4_g32_gqaavg"],
    )
    assert _not_by_method(info).to_dict() == {"fp": 0.0, "awq_w4_g32": 0.0, "awq_w4_g32_gqaavg": 0.0}
    text = " ".join(_dtypes_and_fallbacks(info))
    assert ("awq_w4_g32: o_proj unscaled under grouped-query attention (30 of 210 modules), as in the reference AWQ."
            in text)
    assert ("awq_w4_g32_gqaavg: o_proj scaled by its AWQ scale averaged over each key-value head's query heads "
            "(30 of 210 modules)" in text)
    assert "did not apply" not in text
    # Without the module count (tables written before it existed): the share.
    text = " ".join(_dtypes_and_fallbacks(info.drop(columns="quantized_modules")))
    assert "awq_w4_g32: o_proj unscaled under grouped-query attention (14.3% of its modules)" in text
