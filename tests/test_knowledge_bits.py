"""The knowledge-bits estimator on models whose answer distributions are set exactly."""

import math

import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from fkr_kedro.analysis.knowledge_bits import (
    bits_by_relation,
    knowledge_bits_sentences,
    measure_knowledge_bits,
)
from fkr_kedro.modeling.tokenizer import build_word_tokenizer

NEG = -1e4  # a logit whose probability is exactly 0 in float32


class DistributionLM(PreTrainedModel):
    """Next-token distributions by table lookup: after a known prefix, the given
    probabilities (tokens not listed get none); after any other prefix, uniform."""

    config_class = LlamaConfig

    def __init__(self, config, table: dict[tuple[int, ...], dict[int, float]]):
        super().__init__(config)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.table = table

    def forward(self, input_ids, attention_mask=None, **kwargs):
        batch, length = input_ids.shape
        logits = torch.zeros(batch, length, self.config.vocab_size)
        for b in range(batch):
            mask = attention_mask[b] if attention_mask is not None else torch.ones(length)
            positions = mask.nonzero().flatten().tolist()
            ids = input_ids[b, positions].tolist()
            for t, position in enumerate(positions):
                dist = self.table.get(tuple(ids[: t + 1]))
                if dist is not None:
                    logits[b, position] = NEG
                    for token, p in dist.items():
                        logits[b, position, token] = math.log(p)
        return CausalLMOutput(logits=logits)


# Relation "capital": four single-word objects; relation "home": two-word objects (two candidates).
FACTS = pd.DataFrame(
    {
        "relation": ["capital"] * 4 + ["home"] * 2,
        "prompt": ["alpha capital", "beta capital", "gamma capital", "delta capital", "alpha home", "beta home"],
        "object": ["paris", "rome", "oslo", "lima", "new york", "old york"],
    }
)


def _model(tok, dists: dict[str, dict[str, float]]) -> DistributionLM:
    """``dists``: prefix text -> {next word: probability}."""
    config = LlamaConfig(vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id)
    table = {
        tuple(tok(prefix)["input_ids"]): {tok.convert_tokens_to_ids(w): p for w, p in dist.items()}
        for prefix, dist in dists.items()
    }
    return DistributionLM(config, table).eval()


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer([f"{p} {o}" for p, o in zip(FACTS["prompt"], FACTS["object"])])


def test_lookup_model_gives_the_hand_computed_bits(tok):
    capitals = ["paris", "rome", "oslo", "lima"]
    # P(true object) per capital fact: 1, 0.5, 0.25, 0.25 (the rest on another capital).
    p_true = dict(zip(FACTS["prompt"][:4], [1.0, 0.5, 0.25, 0.25]))
    dists = {}
    for prompt, obj in zip(FACTS["prompt"][:4], capitals):
        other = next(c for c in capitals if c != obj)
        dists[prompt] = {obj: p_true[prompt]} | ({other: 1 - p_true[prompt]} if p_true[prompt] < 1 else {})
    # "new york": P(new) = 0.5, P(york | new) = 0.5 -> 0.25; "old york": P(old) = 1, P(york | old) = 1.
    dists["alpha home"] = {"new": 0.5, "old": 0.5}
    dists["alpha home new"] = {"york": 0.5, "paris": 0.5}
    dists["beta home"] = {"old": 1.0}
    dists["beta home old"] = {"york": 1.0}
    result = measure_knowledge_bits(_model(tok, dists), tok, FACTS, parameters=100, weight_bits=800.0, batch_size=4)
    by = result.by_relation.set_index("relation")
    # capital: 4 * log2 4 = 8 bits of load; log2 P = 0, -1, -2, -2 -> 8 - 5 = 3 bits.
    assert by.loc["capital", "load_bits"] == 8.0
    assert by.loc["capital", "stored_bits"] == pytest.approx(3.0, abs=1e-4)
    # home: 2 * log2 2 = 2 bits; log2 P = -2, 0 -> max(0, 2 - 2) = 0 bits.
    assert by.loc["home", "stored_bits"] == pytest.approx(0.0, abs=1e-4)
    metrics = result.metrics()
    assert metrics["stored_bits"] == pytest.approx(3.0, abs=1e-4)
    assert metrics["knowledge_load_bits"] == 10.0
    assert metrics["stored_bits_per_param"] == pytest.approx(0.03, abs=1e-6)
    assert metrics["stored_bits_per_weight_bit"] == pytest.approx(3.0 / 800, abs=1e-7)
    assert metrics["stored_bits.capital"] == pytest.approx(3.0, abs=1e-4)


def test_uniform_over_candidates_holds_zero_bits(tok):
    capitals = ["paris", "rome", "oslo", "lima"]
    dists = {prompt: dict.fromkeys(capitals, 0.25) for prompt in FACTS["prompt"][:4]}
    dists |= {"alpha home": {"new": 0.5, "old": 0.5}, "beta home": {"new": 0.5, "old": 0.5}}
    dists |= {f"{p} {w}": {"york": 1.0} for p in ("alpha home", "beta home") for w in ("new", "old")}
    result = measure_knowledge_bits(_model(tok, dists), tok, FACTS, parameters=100, weight_bits=800.0)
    assert result.by_relation["stored_bits"].tolist() == pytest.approx([0.0, 0.0], abs=1e-4)
    # Exactly zero before the clip: each fact's bits are log2 |V| - log2 |V|.
    assert result.by_relation["loss_nats"].tolist() == pytest.approx([math.log(4), math.log(2)], abs=1e-5)


def test_perfect_recall_stores_the_whole_load_and_sentences_follow():
    scored = FACTS.assign(answer_logprob=0.0)
    by = bits_by_relation(scored)
    assert by["stored_bits"].tolist() == by["load_bits"].tolist() == [8.0, 2.0]
    rows = []
    for variant, stored in (("fp", 10.0), ("rtn_w2_g32", 2.5)):
        for metric, value in {"stored_bits": stored, "knowledge_load_bits": 10.0, "stored_fraction": stored / 10,
                              "stored_bits_per_param": stored / 100, "stored_bits_per_weight_bit": stored / 800}.items():
            rows.append({"variant": variant, "metric": metric, "relation": None, "value": value})
    lines = knowledge_bits_sentences(pd.DataFrame(rows), "fp")
    assert lines[0].startswith("fp stores 10 of the 10 bits") and "rtn_w2_g32 keeps the least (25.0%" in lines[1]


def test_missing_columns_fail_early():
    with pytest.raises(ValueError, match="answer_logprob"):
        bits_by_relation(FACTS)
