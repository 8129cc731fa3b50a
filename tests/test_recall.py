"""Recall evaluation scores exactly what a lookup model knows."""

import math

import pandas as pd
import pytest
import torch
from transformers import GenerationMixin, LlamaConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from fkr_kedro.analysis.recall import (
    estimate_recall_seconds,
    evaluate_one_hop,
    evaluate_two_hop,
    is_whole_name_match,
    measure_recall,
    score_prompts,
    summarize_recall,
    teacher_forced,
)
from fkr_kedro.knowledge.world import WorldConfig, generate_world
from fkr_kedro.modeling.tokenizer import build_word_tokenizer

P_ANSWER = 0.8  # probability the lookup model puts on each token of the answer it gives


class LookupLM(PreTrainedModel, GenerationMixin):
    """Continues a known text by table lookup: after a known prefix it puts P_ANSWER on
    the next token of the stored continuation (the rest spread evenly), then end of text."""

    config_class = LlamaConfig

    def __init__(self, config, continuations: dict[tuple[int, ...], list[int]]):
        super().__init__(config)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.table = {}
        for prompt, answer in continuations.items():
            for i, token in enumerate(answer + [config.eos_token_id]):
                self.table[prompt + tuple(answer[:i])] = token

    def forward(self, input_ids, attention_mask=None, **kwargs):
        batch, length = input_ids.shape
        vocab = self.config.vocab_size
        rest = (1 - P_ANSWER) / (vocab - 1)
        logits = torch.full((batch, length, vocab), math.log(rest))
        for b in range(batch):
            mask = attention_mask[b] if attention_mask is not None else torch.ones(length)
            positions = mask.nonzero().flatten().tolist()  # left or right padding
            ids = input_ids[b, positions].tolist()
            for t, position in enumerate(positions):
                token = self.table.get(tuple(ids[: t + 1]), self.config.eos_token_id)
                logits[b, position, token] = math.log(P_ANSWER)
        return CausalLMOutput(logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.fixture(scope="module")
def world():
    return generate_world(WorldConfig(n_people=60, n_cities=8, n_countries=4, n_continents=2, n_companies=6,
                                      n_landmarks=8, n_first_names=10, n_last_names=10, n_place_parts=10))


def lookup_model(tokenizer, answers: dict[str, str]) -> LookupLM:
    config = LlamaConfig(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    table = {
        tuple(tokenizer(prompt)["input_ids"]): tokenizer(answer, add_special_tokens=False)["input_ids"]
        for prompt, answer in answers.items()
    }
    return LookupLM(config, table).eval()


def test_lookup_model_scores_exactly_its_knowledge(world):
    one_hop = world.one_hop_table()
    tok = build_word_tokenizer(world.corpus())
    # It knows every third fact; for the others it answers another object of the relation.
    wrong = {r: sorted(set(f.values())) for r, f in world.facts.items()}
    answers, expected = {}, []
    for i, row in enumerate(one_hop.itertuples()):
        knows = i % 3 == 0
        answers[row.prompt] = row.object if knows else next(o for o in wrong[row.relation] if o != row.object)
        expected.append(knows)
    scores = evaluate_one_hop(lookup_model(tok, answers), tok, one_hop, batch_size=16)
    assert scores["correct"].tolist() == expected
    n_tokens = [len(o.split()) for o in one_hop["object"]]
    known_logprob = [n * math.log(P_ANSWER) for n in n_tokens]
    # A known answer costs log P_ANSWER per token; an unknown one starts with an unlikely token.
    assert scores.loc[scores["correct"], "answer_logprob"].tolist() == pytest.approx(
        [lp for lp, k in zip(known_logprob, expected) if k], abs=1e-4)
    assert (scores.loc[~scores["correct"], "answer_logprob"] < math.log(P_ANSWER) * 4).all()


def test_two_hop_readouts_and_summary(world):
    two_hop = world.two_hop_table()
    tok = build_word_tokenizer(world.corpus())
    # Knows every first hop and second hop, and composes only the seen chains.
    answers = {}
    for row in two_hop.itertuples():
        answers[row.prompt_first_hop] = row.e2
        answers[row.prompt_one_hop] = row.e3
        if row.split == "seen":
            answers[row.prompt_two_hop] = row.e3
    scores = evaluate_two_hop(lookup_model(tok, answers), tok, two_hop, batch_size=32)
    by = scores.groupby(["readout", "split"])["correct"].mean()
    assert by[("r1(e1)", "held_out")] == 1.0 and by[("r2(e2)", "held_out")] == 1.0
    assert by[("r2(r1(e1))", "seen")] == 1.0 and by[("r2(r1(e1))", "held_out")] == 0.0
    one_hop_scores = pd.DataFrame({"relation": ["a", "a", "b"], "correct": [True, False, True], "answer_logprob": [0.0, -1.0, -2.0]})
    metrics = summarize_recall(one_hop_scores, scores, two_hop)
    assert metrics["one_hop.accuracy"] == pytest.approx(2 / 3)
    assert metrics["one_hop.accuracy.a"] == 0.5
    assert metrics["two_hop.seen.accuracy"] == 1.0 and metrics["two_hop.held_out.accuracy"] == 0.0
    assert 0 < metrics["two_hop.held_out.chance"] < 1


@pytest.mark.parametrize(
    "generated, aliases, expected",
    [
        (" Paris is lovely", ["Paris"], True),
        (" Parisian", ["Paris"], False),
        (" São Paulo.", ["Sao Paulo"], True),
        (" New", ["New York"], False),
        ("", ["Paris"], False),
        (" The Hague", ["Den Haag", "The Hague"], True),
    ],
)
def test_whole_name_match(generated, aliases, expected):
    assert is_whole_name_match(generated, aliases) is expected


def test_teacher_forced_verdicts_equal_generation(world):
    """Teacher forcing decides every verdict of the lookup model as generation does."""
    one_hop = world.one_hop_table()
    tok = build_word_tokenizer(world.corpus())
    wrong = {r: sorted(set(f.values())) for r, f in world.facts.items()}
    answers = {row.prompt: row.object if i % 3 == 0 else next(o for o in wrong[row.relation] if o != row.object)
               for i, row in enumerate(one_hop.itertuples())}
    model = lookup_model(tok, answers)
    generated = evaluate_one_hop(model, tok, one_hop, batch_size=16, mode="generate")
    forced = evaluate_one_hop(model, tok, one_hop, batch_size=16, mode="teacher_forced")
    assert forced["correct"].tolist() == generated["correct"].tolist()
    assert forced["correct"].sum() == (len(one_hop) + 2) // 3
    assert forced["answer_logprob"].to_numpy() == pytest.approx(generated["answer_logprob"].to_numpy(), abs=1e-5)


def test_teacher_forced_checks_the_whole_name_boundary_and_aliases():
    """"Paris" followed by the word piece "##ian" is "Parisian": every answer token is the
    argmax (is_greedy alone would say recalled), but the name does not end there."""
    tok = build_word_tokenizer(["Kim lives in Paris ##ian", "Lou lives in Paris", "Ana lives in The Hague Den Haag",
                                "Bo lives in Rome Paris"])
    model = lookup_model(tok, {"Kim lives in": "Paris ##ian", "Lou lives in": "Paris", "Ana lives in": "The Hague",
                               "Bo lives in": "Rome"})
    prompts = ["Kim lives in", "Lou lives in", "Ana lives in", "Bo lives in"]
    answers = ["Paris", "Paris", "Den Haag", "Paris"]
    aliases = [["Paris"], ["Paris"], ["Den Haag", "The Hague"], ["Paris"]]
    forced = teacher_forced(model, tok, prompts, answers)
    assert forced["greedy"].tolist() == [True, True, False, False]  # the tokens alone
    assert forced["text"][0] == "Parisian"
    expected = [False, True, True, False]
    for mode in ("generate", "teacher_forced"):
        scores = score_prompts(model, tok, prompts, answers, aliases, batch_size=2, mode=mode)
        assert scores["correct"].tolist() == expected, mode
    # Generation's bound: a name as long as max_new_tokens ends the generated text.
    for mode in ("generate", "teacher_forced"):
        assert score_prompts(model, tok, prompts[:1], answers[:1], max_new_tokens=1, mode=mode)["correct"].tolist() == [True]


def test_answer_window_scoring_equals_unbatched_full_logits(world):
    """Left-padded batches scoring only the answer window (``logits_to_keep``) give each row's
    answer log-probability and greedy verdict as one unpadded forward pass over the whole
    text does, on a real (random) Llama whose forward takes ``logits_to_keep``."""
    from transformers import LlamaForCausalLM

    from fkr_kedro.analysis.recall import answer_logprobs

    one_hop = world.one_hop_table().head(40)
    tok = build_word_tokenizer(world.corpus())
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, pad_token_id=tok.pad_token_id,
                                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)).eval()
    prompts = one_hop["prompt"].tolist()
    # Answers of one to three words, so the batch's windows and paddings differ.
    answers = [" ".join(one_hop["object"].iloc[(i + k) % len(one_hop)] for k in range(1 + i % 3)) for i in range(len(prompts))]
    expected_logprob, expected_greedy, expected_first = [], [], []
    with torch.no_grad():
        for p, a in zip(prompts, answers):
            n_prompt = len(tok(p)["input_ids"])
            ids = tok(f"{p} {a}", return_tensors="pt")["input_ids"]
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            targets = ids[0, n_prompt:]
            steps = logp[n_prompt - 1 :]
            expected_logprob.append(float(steps.gather(-1, targets[:, None]).sum()))
            expected_greedy.append(bool((steps.argmax(-1) == targets).all()))
            expected_first.append(int(steps[0].argmax()))
    got = answer_logprobs(model, tok, prompts, answers, batch_size=16)
    assert got.tolist() == pytest.approx(expected_logprob, abs=1e-4)
    forced = teacher_forced(model, tok, prompts, answers, batch_size=16)
    assert forced["answer_logprob"].tolist() == pytest.approx(expected_logprob, abs=1e-4)
    assert forced["first_id"].tolist() == expected_first
    decided = forced["decidable"].to_numpy()  # greedy needs the token after the name to show
    assert decided.sum() >= len(prompts) // 2
    assert forced["greedy"][decided].tolist() == [g for g, d in zip(expected_greedy, decided) if d]


def _knows_everything(world, tok):
    answers = {row.prompt: row.object for row in world.one_hop_table().itertuples()}
    for row in world.two_hop_table().itertuples():
        answers |= {row.prompt_first_hop: row.e2, row.prompt_one_hop: row.e3, row.prompt_two_hop: row.e3}
    return lookup_model(tok, answers)


def test_recall_logs_one_estimate_line_from_a_timed_warm_up(world, caplog):
    """The estimate: the first batch timed (an injected clock: 2 s for it), extrapolated to
    every prompt, in one line per evaluation; the scores are those of a run without it."""
    one_hop, two_hop = world.one_hop_table(), world.two_hop_table()
    tok = build_word_tokenizer(world.corpus())
    model = _knows_everything(world, tok)
    model.config._name_or_path = "data/06_models/variants/gptq_w4_g32"  # where a variant is loaded from
    prompts = len(one_hop) + 3 * len(two_hop)
    ticks = iter([100.0, 102.0])
    with caplog.at_level("INFO", logger="fkr_kedro.analysis.recall"):
        result = measure_recall(model, tok, one_hop, two_hop, batch_size=8, clock=lambda: next(ticks), mode="teacher_forced")
    lines = [r.getMessage() for r in caplog.records if r.name == "fkr_kedro.analysis.recall"]
    assert lines == [f"evaluate gptq_w4_g32: ~{prompts * 2 / 8:.0f} s for {prompts} prompts (measured on the first 8)"]
    assert next(ticks, None) is None  # the clock timed the warm-up batch only
    plain = measure_recall(model, tok, one_hop, two_hop, batch_size=8, estimate=False, mode="teacher_forced")
    pd.testing.assert_frame_equal(result.one_hop, plain.one_hop)
    pd.testing.assert_frame_equal(result.two_hop, plain.two_hop)
    assert {k: v for k, v in result.metrics.items() if not k.startswith("eval.")} == {
        k: v for k, v in plain.metrics.items() if not k.startswith("eval.")
    }
    # A short evaluation (fewer than 8 batches) is not estimated; a label names the line.
    caplog.clear()
    with caplog.at_level("INFO", logger="fkr_kedro.analysis.recall"):
        measure_recall(model, tok, one_hop, two_hop, batch_size=prompts // 7, clock=lambda: 0.0)
        measure_recall(model, tok, one_hop, two_hop, batch_size=16, label="evaluate base", clock=iter([0.0, 0.5]).__next__)
    assert [r.getMessage() for r in caplog.records if r.name == "fkr_kedro.analysis.recall"] == [
        f"evaluate base: ~{prompts * 0.5 / 16:.0f} s for {prompts} prompts (measured on the first 16)"
    ]


def test_the_estimate_times_the_more_numerous_kind_of_prompt(world):
    """Two-hop readouts outnumbering one-hop facts (the paper's LRE + TwoHopFact): the warm-up
    scores the first two-hop prompts r2(r1(e1)), the longest of a chain."""
    two_hop = world.two_hop_table()
    tok = build_word_tokenizer(world.corpus())
    model = _knows_everything(world, tok)
    scored = []
    real_forward = model.forward

    def forward(input_ids, attention_mask=None, **kwargs):
        scored.extend(tok.batch_decode(input_ids, skip_special_tokens=True))
        return real_forward(input_ids, attention_mask, **kwargs)

    model.forward = forward
    ticks = iter([0.0, 3.0])
    guess = estimate_recall_seconds(model, tok, world.one_hop_table().iloc[:0], two_hop, batch_size=4, clock=lambda: next(ticks))
    assert (guess.prompts, guess.measured, guess.seconds) == (3 * len(two_hop), 4, 3 * len(two_hop) * 3.0 / 4)
    assert guess.line("evaluate fp") == f"evaluate fp: ~{guess.seconds:.0f} s for {guess.prompts} prompts (measured on the first 4)"
    assert scored and all(any(text.startswith(p) for p in two_hop["prompt_two_hop"].iloc[:4]) for text in scored)
    assert estimate_recall_seconds(model, tok, world.one_hop_table().iloc[:0], two_hop.iloc[:5], batch_size=4) is None
