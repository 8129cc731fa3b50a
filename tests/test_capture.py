"""Activation capture: token positions from offsets (word-level and byte-level BPE tokenizers),
padding on either side, stored values against plain unpadded forward passes, CnstScore
inputs, and the single-file safetensors round trip."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from fkr_kedro.analysis.capture import (
    ActivationCache,
    CaptureConfig,
    answer_first_token_ids,
    capture_activations,
    char_span_to_last_token,
)
from fkr_kedro.analysis.readouts import cnst_components
from fkr_kedro.modeling.tokenizer import build_word_tokenizer



@pytest.fixture(scope="module")
def tables(tiny_world):
    one, two = tiny_world.one_hop_table(), tiny_world.two_hop_table()
    # A few rows of each relation / composition keep the test fast.
    one = one.groupby("relation", group_keys=False).head(6).reset_index(drop=True)
    two = two.groupby("composition", group_keys=False).head(6).reset_index(drop=True)
    return one, two


def build_bpe_tokenizer(texts, trim_offsets: bool) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2 style: leading-space tokens, no BOS) trained on ``texts``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=trim_offsets)
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", padding_side="left", clean_up_tokenization_spaces=False
    )


def tiny_llama(tokenizer, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger weights than the default init, so errors would show
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


@pytest.fixture(scope="module", params=["word", "bpe_untrimmed", "bpe_trimmed"])
def tokenizer(request, tiny_world):
    if request.param == "word":
        return build_word_tokenizer(tiny_world.corpus())
    return build_bpe_tokenizer(tiny_world.corpus(), trim_offsets=request.param == "bpe_trimmed")


# ---------------------------------------------------------------------------------------


def test_char_span_to_last_token_word_level():
    # "<s> The mother of Stevie Wonder is": BOS is (0, 0).
    offsets = [(0, 0), (0, 3), (4, 10), (11, 13), (14, 20), (21, 27), (28, 30)]
    assert char_span_to_last_token(offsets, 14, 27) == 5  # "Stevie Wonder" -> "Wonder"
    assert char_span_to_last_token(offsets, 14, 20) == 4
    assert char_span_to_last_token(offsets, 0, 30) == 6


def test_char_span_to_last_token_bpe_leading_space():
    # Byte-level BPE, untrimmed offsets: " Wonder" covers its leading space.
    text = "The mother of Stevie Wonder is"
    untrimmed = [(0, 3), (3, 10), (10, 13), (13, 17), (17, 20), (20, 27), (27, 30)]  # " Stev" "ie" " Wonder" " is"
    start, end = text.index("Stevie"), text.index("Stevie") + len("Stevie Wonder")
    assert char_span_to_last_token(untrimmed, start, end) == 5
    trimmed = [(0, 3), (4, 10), (11, 13), (14, 18), (18, 20), (21, 27), (28, 30)]
    assert char_span_to_last_token(trimmed, start, end) == 5
    # A span ending inside a token picks that token.
    assert char_span_to_last_token(trimmed, 14, 16) == 3
    with pytest.raises(ValueError):
        char_span_to_last_token([(0, 0), (0, 3)], 5, 8)


def test_answer_first_token_has_leading_space_for_bpe(tiny_world):
    tok = build_bpe_tokenizer(tiny_world.corpus(), trim_offsets=False)
    prompt, answer = "The country of X is", tiny_world.entities["country"][0]
    (tid,) = answer_first_token_ids(tok, [prompt], [answer]).tolist()
    piece = tok.decode([tid])
    assert piece.startswith(" ") and answer.startswith(piece.strip())
    # ... and it is the token the model would have to produce right after the prompt.
    assert tok(prompt + " " + answer)["input_ids"][len(tok(prompt)["input_ids"])] == tid


def test_positions_land_on_the_right_tokens(tokenizer, tables):
    one, two = tables
    model = tiny_llama(tokenizer)
    cache = capture_activations(model, tokenizer, one, two, CaptureConfig(batch_size=5, progress=False))
    for prompt_set, table, prompt_col, end_col in (
        ("one_hop", one, "prompt", "subject_end"),
        ("two_hop", two, "prompt_two_hop", "mention_end"),
    ):
        pos = "subject" if prompt_set == "one_hop" else "mention"
        for i, row in table.reset_index(drop=True).iterrows():
            prompt, end = row[prompt_col], int(row[end_col])
            # Independent check: the last token of the prompt cut after the span (pre-tokenizers
            # split at spaces, so the prefix tokenizes as the prompt's first tokens).
            assert cache[f"{prompt_set}.token_id.{pos}"][i] == tokenizer(prompt[:end])["input_ids"][-1]
            assert cache[f"{prompt_set}.token_id.last"][i] == tokenizer(prompt)["input_ids"][-1]
        last_words = [p.split()[-1] for p in table[prompt_col]]
        decoded = [tokenizer.decode([t]).strip() for t in cache[f"{prompt_set}.token_id.last"].tolist()]
        assert all(w.endswith(d) for w, d in zip(last_words, decoded))
    words = [s.split()[-1] for s in one["subject"]]
    decoded = [tokenizer.decode([t]).strip() for t in cache["one_hop.token_id.subject"].tolist()]
    assert all(w.endswith(d) and d for w, d in zip(words, decoded))


@pytest.mark.parametrize("side", ["left", "right"])
def test_values_match_unpadded_forward(side, tiny_world, tables):
    one, two = tables
    tokenizer = build_word_tokenizer(tiny_world.corpus())
    model = tiny_llama(tokenizer, seed=1)
    cache = capture_activations(
        model, tokenizer, one, two, CaptureConfig(batch_size=7, padding_side=side, max_act_prompts=None, progress=False)
    )
    norm, n_layers = model.model.norm, model.config.num_hidden_layers
    layers = model.model.layers
    with torch.no_grad():
        for i, row in one.iterrows():
            ids = torch.tensor([tokenizer(row["prompt"])["input_ids"]])
            out = model(ids, output_hidden_states=True)
            hs = out.hidden_states
            s = [j for j, t in enumerate(ids[0].tolist()) if t == cache["one_hop.token_id.subject"][i]][-1]
            got_last = cache["one_hop.resid_post.last"][i].float()
            got_subj = cache["one_hop.resid_post.subject"][i].float()
            for layer in range(n_layers):  # HF's last hidden state is normed, ours is not
                torch.testing.assert_close(got_last[layer], hs[layer][0, -1], atol=2e-2, rtol=2e-3)
                torch.testing.assert_close(got_subj[layer], hs[layer][0, s], atol=2e-2, rtol=2e-3)
            torch.testing.assert_close(norm(got_last[n_layers]), hs[n_layers][0, -1], atol=2e-2, rtol=2e-3)
            # The stream adds up: resid_post[l+1] = resid_post[l] + attn_out[l] + mlp_out[l].
            attn, mlp = cache["one_hop.attn_out.last"][i].float(), cache["one_hop.mlp_out.last"][i].float()
            torch.testing.assert_close(got_last[1:], got_last[:-1] + attn + mlp, atol=3e-2, rtol=3e-3)
            # down_proj(mlp_act) is the MLP output.
            act = cache["one_hop.mlp_act.last"][i].float()
            for layer in range(n_layers):
                torch.testing.assert_close(layers[layer].mlp.down_proj(act[layer]), mlp[layer], atol=3e-2, rtol=3e-3)
            logp = torch.log_softmax(out.logits[0, -1], -1)
            assert abs(logp[cache["one_hop.answer_token"][i]] - cache["one_hop.answer_logprob"][i]) < 1e-4
        for i, row in two.iterrows():
            lp2 = torch.log_softmax(model(torch.tensor([tokenizer(row["prompt_two_hop"])["input_ids"]])).logits[0, -1], -1)
            lp1 = torch.log_softmax(model(torch.tensor([tokenizer(row["prompt_one_hop"])["input_ids"]])).logits[0, -1], -1)
            want = cnst_components(lp2, lp1)
            for key in ("cnst_score", "xent_2h_1h", "xent_1h_2h", "entropy_2h", "entropy_1h"):
                assert abs(float(want[key]) - float(cache[f"two_hop.{key}"][i])) < 1e-4, key
            e2_first = tokenizer(row["e2"].split()[0])["input_ids"][-1]
            assert cache["two_hop.bridge_token"][i] == e2_first


def test_shapes_dtypes_and_safetensors_round_trip(tmp_path, tiny_world, tables):
    one, two = tables
    tokenizer = build_word_tokenizer(tiny_world.corpus())
    model = tiny_llama(tokenizer)
    cache = capture_activations(model, tokenizer, one, two, CaptureConfig(batch_size=8, max_act_prompts=5, progress=False))
    n1, n2, L, d, dm = len(one), len(two), 2, 32, 64
    assert cache["one_hop.resid_post.subject"].shape == (n1, L + 1, d)
    assert cache["two_hop.resid_post.mention"].shape == (n2, L + 1, d)
    assert cache["two_hop.resid_post.last"].shape == (n2, L + 1, d)
    assert cache["one_hop.attn_out.last"].shape == (n1, L, d)
    assert cache["one_hop.mlp_out.last"].shape == (n1, L, d)
    assert cache["one_hop.mlp_act.last"].shape == (5, L, dm)
    assert cache["two_hop.cnst_score"].shape == (n2,)
    assert cache["one_hop.resid_post.last"].dtype == torch.float16
    # Gibbs: H(p, q) >= H(p), so CnstScore <= -(H(p_2H) + H(p_1H)) / 2.
    bound = -0.5 * (cache["two_hop.entropy_2h"] + cache["two_hop.entropy_1h"])
    assert (cache["two_hop.cnst_score"] <= bound + 1e-4).all()

    path = tmp_path / "fp.safetensors"
    cache.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["fp.safetensors"]
    back = ActivationCache.load(path)
    assert back.keys() == cache.keys() and back.metadata == cache.metadata
    for k in cache.keys():
        assert torch.equal(back[k], cache[k]), k
    assert back.n_layers == L

    # The FFN subset is the same for any model captured with the same settings.
    other_config = CaptureConfig(batch_size=3, max_act_prompts=5, progress=False)
    other = capture_activations(tiny_llama(tokenizer, seed=3), tokenizer, one, two, other_config)
    assert torch.equal(other["one_hop.mlp_act.rows"], cache["one_hop.mlp_act.rows"])
    assert other.prompts_hash("two_hop") == cache.prompts_hash("two_hop")
