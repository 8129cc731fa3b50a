"""Readouts of captured activations: CnstScore, EntRec on a hand-built model, neuron
attribution with a planted neuron, and drift (cosine, linear CKA), with their intervals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fkr_kedro.analysis.capture import CaptureConfig, capture_activations
from fkr_kedro.analysis.drift import _weighted_cka, cka_by_layer, cka_estimate, cosine_by_layer, drift_table, linear_cka
from fkr_kedro.analysis.neurons import (
    AttributionScores,
    attribute,
    attribution_table,
    neuron_contributions,
    tau_threshold,
)
from fkr_kedro.analysis.readouts import cnst_components, cnst_score, cross_entropy, entrec, unembed_logprobs
from fkr_kedro.analysis.statistics import StatisticsSettings
from fkr_kedro.modeling.tokenizer import build_word_tokenizer


def top_neurons(scores: AttributionScores, k: int = 10) -> pd.DataFrame:
    """The ``k`` highest-scoring FFN neurons of each prompt: row, rank, layer, neuron, score."""
    flat = scores.ffn.flatten(1)
    vals, idx = torch.topk(flat, min(k, flat.shape[1]), dim=1)
    d_mlp = scores.ffn.shape[2]
    out = []
    for p in range(len(flat)):
        for r in range(vals.shape[1]):
            out.append((int(scores.rows[p]), r, int(idx[p, r]) // d_mlp, int(idx[p, r]) % d_mlp, float(vals[p, r])))
    return pd.DataFrame(out, columns=["row", "rank", "layer", "neuron", "score"])


FAST = CaptureConfig(batch_size=16, max_act_prompts=None, progress=False)


@pytest.fixture(scope="module")
def tokenizer(tiny_world):
    return build_word_tokenizer(tiny_world.corpus())


def llama(tokenizer, d=64, layers=2, d_mlp=64, seed=0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=d, intermediate_size=d_mlp, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).eval()


# ----------------------------------------------------------------------------- CnstScore


def test_cnst_score_of_identical_distributions_is_minus_entropy():
    logp = torch.log_softmax(torch.randn(5, 50), -1)
    entropy = -(logp.exp() * logp).sum(-1)
    torch.testing.assert_close(cnst_score(logp, logp), -entropy)


def test_cnst_score_by_hand():
    p, q = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.25, 0.5])
    lp, lq = torch.log(p), torch.log(q)
    assert math.isclose(float(cross_entropy(lp, lq)), math.log(4), rel_tol=1e-6)  # zero p-terms count 0
    assert math.isinf(float(cross_entropy(lq, lp)))  # q puts mass where p has none
    a, b = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.2, 0.5, 0.3])
    want = -0.5 * -(a * b.log()).sum() - 0.5 * -(b * a.log()).sum()
    comps = cnst_components(a.log(), b.log())
    torch.testing.assert_close(comps["cnst_score"], want)
    assert comps["cnst_score"] < -0.5 * (comps["entropy_2h"] + comps["entropy_1h"])


# ----------------------------------------------------------------------------- EntRec


def test_entrec_is_maximal_when_the_residual_is_the_bridge_unembedding(tiny_world, tokenizer):
    """Blocks write nothing (o_proj = down_proj = 0), so every layer's residual at the mention's
    last token is that token's embedding; set it to W_U[first token of e2]."""
    two = tiny_world.two_hop_table()
    two = two[~two["e1"].str.split().str[-1].duplicated()].reset_index(drop=True)  # one e2 per mention token
    model = llama(tokenizer)
    vocab = len(tokenizer)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        w_u = torch.nn.functional.normalize(torch.randn(vocab, 64), dim=-1) * 30
        model.lm_head.weight.copy_(w_u)
    cache = capture_activations(model, tokenizer, None, two, FAST)
    with torch.no_grad():
        for tok_id, e2_tok in zip(cache["two_hop.token_id.mention"].tolist(), cache["two_hop.bridge_token"].tolist()):
            model.model.embed_tokens.weight[tok_id] = w_u[e2_tok]
    cache = capture_activations(model, tokenizer, None, two, FAST)
    got = entrec(model, cache)
    assert got.shape == (len(two), 3)
    with torch.no_grad():
        for layer in range(3):
            full = unembed_logprobs(model, cache["two_hop.resid_post.mention"][:, layer])
            best = full.max(-1)
            assert torch.equal(best.indices, cache["two_hop.bridge_token"])
            np.testing.assert_allclose(got[:, layer], best.values.numpy(), atol=1e-5)
    assert (got > -1e-3).all()  # essentially probability 1
    # A model that does not recall the bridge scores far lower.
    other = llama(tokenizer, seed=5)
    assert entrec(other, capture_activations(other, tokenizer, None, two, FAST)).max() < -1.0


# ----------------------------------------------------------------------------- attribution


def _planted_model(tokenizer, answer_token: int, last_token: int, neuron=7, strength=1.0):
    """Attention and block 0 write nothing, so block 1's MLP reads the last token's embedding;
    block 1's FFN neurons are random except neuron ``neuron``, which fires on the last prompt
    token and writes the answer's unembedding direction."""
    model = llama(tokenizer, d=32, layers=2, d_mlp=64, seed=2)
    with torch.no_grad():
        for block in model.model.layers:
            block.self_attn.o_proj.weight.zero_()
        model.model.layers[0].mlp.down_proj.weight.zero_()
        mlp = model.model.layers[1].mlp
        for proj in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            proj.weight.normal_(0, 0.2)  # the other neurons matter a little, and not all alike
        model.lm_head.weight.normal_(0, 0.3)
        e = model.model.embed_tokens.weight[last_token]
        e = e / e.norm()
        mlp.gate_proj.weight[neuron] = 0.5 * e
        mlp.up_proj.weight[neuron] = 0.5 * e
        u = model.lm_head.weight[answer_token]
        mlp.down_proj.weight[:, neuron] = strength * u / u.norm()
    return model


@pytest.fixture(scope="module")
def planted(tiny_world, tokenizer):
    one = tiny_world.one_hop_table()
    # Prompts sharing one answer (and all ending in one word, "in" of "... was born in"), so
    # one neuron helps them all.
    top = one[one["relation"] == "birth_city"]["object"].value_counts().index[0]
    one = one[(one["relation"] == "birth_city") & (one["object"] == top)].reset_index(drop=True)
    last_words = {prompt.split()[-1] for prompt in one["prompt"]}
    assert len(last_words) == 1, last_words
    answer = tokenizer(top.split()[0], add_special_tokens=False)["input_ids"][0]
    last = tokenizer(last_words.pop(), add_special_tokens=False)["input_ids"][0]
    return one, answer, last


def test_attribution_ranks_the_planted_neuron_first(planted, tokenizer):
    one, answer, last = planted
    model = _planted_model(tokenizer, answer, last)
    cache = capture_activations(model, tokenizer, one, None, FAST)
    assert (cache["one_hop.answer_token"] == answer).all()
    for norm in ("final_scale", "renorm"):
        scores = attribute(model, cache, max_prompts=None, norm=norm, progress=False)
        top = top_neurons(scores, k=1)
        assert (top["layer"] == 1).all() and (top["neuron"] == 7).all(), (norm, top)
        assert torch.allclose(scores.attn, torch.zeros_like(scores.attn), atol=1e-6)  # attention writes nothing
    # Neuron contributions add up to the MLP output (fp model).
    act = cache["one_hop.mlp_act.last"][0, 1].float()
    down = model.model.layers[1].mlp.down_proj
    with torch.no_grad():
        total = neuron_contributions(down, act, 0, 64).sum(0)
    torch.testing.assert_close(total, cache["one_hop.mlp_out.last"][0, 1].float(), atol=2e-3, rtol=1e-2)
    # The first-order shortlist finds the same top neuron.
    fast = attribute(model, cache, max_prompts=3, candidates=8, progress=False)
    assert (top_neurons(fast, k=1)["neuron"] == 7).all()
    # Keeping attention/MLP outputs for the attribution rows only gives the same scores.
    small = capture_activations(
        model, tokenizer, one, None, CaptureConfig(batch_size=4, max_act_prompts=3, components="act_rows", progress=False)
    )
    assert small["one_hop.attn_out.last"].shape[0] == 3
    sub = attribute(model, small, max_prompts=None, progress=False)
    full = attribute(model, cache, max_prompts=None, progress=False)
    torch.testing.assert_close(sub.ffn, full.ffn[sub.rows], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sub.mlp, full.mlp[sub.rows], atol=1e-4, rtol=1e-4)


def test_attribution_table_counts_and_drops(planted, tokenizer, tmp_path):
    one, answer, last = planted
    fp = _planted_model(tokenizer, answer, last, strength=1.0)
    weak = _planted_model(tokenizer, answer, last, strength=0.0)  # the "quantized" variant lost the neuron
    scores = {
        name: attribute(m, capture_activations(m, tokenizer, one, None, FAST), max_prompts=4, progress=False)
        for name, m in (("fp", fp), ("weak", weak))
    }
    scores["fp"].save(tmp_path / "s.safetensors")
    back = AttributionScores.load(tmp_path / "s.safetensors")
    assert torch.equal(back.ffn, scores["fp"].ffn)
    table = attribution_table(scores, reference="fp", top_k=5)
    wide = table.pivot_table(index=["variant", "layer"], columns="metric", values="value")
    assert wide.loc["fp", "neurons_above_tau"].sum() == pytest.approx(5)  # ties aside, exactly k
    assert wide.loc[("weak", 1), "top_neurons_retained"] < wide.loc[("fp", 1), "top_neurons_retained"]
    assert wide.loc[("weak", 1), "ffn_drop"] > 0.5
    assert wide.loc[("fp", 1), "ffn_drop"] == 0
    assert tau_threshold(scores["fp"], 1).shape == (4,)

    # Intervals over the four attributed prompts, and paired tests against the reference.
    rows = table.set_index(["variant", "layer", "metric"])
    assert ((rows["ci_low"] <= rows["value"] + 1e-9) & (rows["value"] <= rows["ci_high"] + 1e-9)).all()
    assert rows.loc["fp", ["delta", "p_value", "p_holm"]].isna().all().all()  # no test against itself
    assert (rows.loc[("fp", 1, "ffn_drop"), ["ci_low", "ci_high"]] == 0).all()
    weak = rows.loc[("weak", 1, "ffn_imp")]
    drop = rows.loc[("weak", 1, "ffn_drop")]
    assert weak["delta"] == pytest.approx(-drop["value"], abs=1e-6)
    # Every prompt lost the neuron: the drop's paired interval lies above 0.
    assert drop["ci_low"] > 0 and np.isnan(drop["p_value"])
    assert weak["delta_ci_high"] < 0 and weak["p_value"] == pytest.approx(0.125)  # Wilcoxon, 4 of 4 prompts
    assert (rows["p_holm"].dropna() >= rows["p_value"].dropna()).all()


# ----------------------------------------------------------------------------- drift


def test_cka_and_cosine():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, generator=g)
    assert linear_cka(x, x) == pytest.approx(1.0)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)  # rotation and scale invariant
    assert linear_cka(x, torch.randn(400, 16, generator=g)) < 0.15
    assert linear_cka(x[:10], x[:10]) == pytest.approx(1.0)  # Gram form (n <= d)
    a = torch.randn(50, 3, 8, generator=g)
    np.testing.assert_allclose(cosine_by_layer(a, a), 1.0)
    np.testing.assert_allclose(cosine_by_layer(a, -a), -1.0)
    np.testing.assert_allclose(cka_by_layer(a, a), 1.0)


def test_drift_table(tiny_world, tokenizer):
    two = tiny_world.two_hop_table().head(40)
    m = llama(tokenizer)
    fp = capture_activations(m, tokenizer, None, two, FAST)
    other = llama(tokenizer, seed=9)
    table = drift_table({"fp": fp, "same": fp, "other": capture_activations(other, tokenizer, None, two, FAST)})
    assert set(table["site"]) == {"two_hop.resid_post.mention", "two_hop.resid_post.last"}
    mean = table.groupby(["variant", "metric"])["value"].mean()
    assert mean["same", "cka"] == pytest.approx(1.0) and mean["same", "cosine"] == pytest.approx(1.0)
    assert mean["other", "cosine"] < 0.5
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["variant", "site", "layer", "metric", "value", "ci_low", "ci_high", "stderr", "reason"]
    assert (table["value"].isna() == (table["reason"] != "")).all()  # a reason exactly where the value is NaN
    # The reference against itself (and a copy of it): intervals of width 0 at 1.
    same = table[table["variant"].isin(["fp", "same"])].dropna(subset=["value"])
    assert same["ci_low"].to_numpy() == pytest.approx(1.0) and same["ci_high"].to_numpy() == pytest.approx(1.0)
    # Another model: every defined value lies in its interval; undefined CKA has none.
    other = table[table["variant"] == "other"]
    defined = other.dropna(subset=["value"])
    eps = 1e-12  # the value is torch's mean, the interval numpy's
    assert len(defined)
    assert ((defined["ci_low"] - eps <= defined["value"]) & (defined["value"] <= defined["ci_high"] + eps)).all()
    # (The last token's embedding is one word for every prompt: a constant cosine, no spread.)
    spread = defined[~((defined["site"] == "two_hop.resid_post.last") & (defined["layer"] == 0))]
    assert (spread["ci_high"] > spread["ci_low"]).all() and (spread["stderr"] > 0).all()
    assert other[other["value"].isna()][["ci_low", "ci_high", "stderr"]].isna().all().all()


def test_the_cka_of_a_resample_is_the_cka_of_the_resampled_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)) + 4.0
    y = x @ rng.normal(size=(6, 9)) + 2 * rng.normal(size=(120, 9))
    statistic = _weighted_cka(x, y)
    idx = rng.integers(0, 120, size=(5, 120))
    np.testing.assert_allclose(statistic(idx), [linear_cka(x[i], y[i]) for i in idx], rtol=1e-10)
    assert statistic(np.arange(120)) == pytest.approx(linear_cka(x, y), rel=1e-12)


def test_cka_interval_brackets_the_value_and_shrinks_with_prompts():
    settings = StatisticsSettings(bootstrap_resamples=200)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 8))
    y = x + rng.normal(size=(4000, 8))  # CKA about 0.5
    small = cka_estimate(x[:250], y[:250], settings)
    full = cka_estimate(x, y, settings)  # above CKA_MAX_ROWS: a subset, its spread rescaled
    capped = cka_estimate(x, y, settings, max_rows=4000)  # every prompt
    for found in (small, full, capped):
        assert found.ci_low < found.value < found.ci_high
    assert full.value == pytest.approx(linear_cka(x, y))
    # The spread of CKA over prompt samples falls as 1/sqrt(n): 4x from 250 to 4,000 prompts.
    width = lambda e: e.ci_high - e.ci_low  # noqa: E731
    assert width(small) / width(capped) == pytest.approx(4, rel=0.35)
    assert width(full) == pytest.approx(width(capped), rel=0.35)
    # Identical matrices: CKA 1 in every resample; a constant matrix: no CKA, no interval.
    assert cka_estimate(x[:300], x[:300], settings).ci_low == pytest.approx(1.0)
    constant = cka_estimate(np.ones((50, 4)), y[:50], settings)
    assert np.isnan(constant.value) and np.isnan(constant.ci_low) and np.isnan(constant.ci_high)
