"""The training loop: the packed forward computes the transformers loss and gradients, and
the torch threads setting resolves per node."""

import pytest
import torch
from transformers import LlamaForCausalLM

from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import (
    ModelShape,
    TrainConfig,
    TrainingTime,
    check_packed_support,
    hf_causal_lm_loss,
    llama_config,
    loss_start_positions,
    packed_causal_lm_loss,
    tokenize_corpus,
    train_causal_lm,
)
from fkr_kedro.parameters import ThreadSettings

CORPUS = ["Ana was born in Rome", "Bo works for Acme Corp", "Rome is in Italy", "Acme Corp is based in the old Rome",
          "Cy was born in Paris", "Paris is in France"]


def test_packed_loss_and_gradients_equal_the_transformers_forward():
    tok = build_word_tokenizer(CORPUS)
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(ModelShape(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64), tok))
    batch = tokenize_corpus(CORPUS, tok)[torch.tensor([0, 1, 3, 3, 4, 5])]  # lengths differ: padding
    results = []
    for loss_fn in (hf_causal_lm_loss, packed_causal_lm_loss):
        model.zero_grad()
        loss = loss_fn(model, batch, tok.pad_token_id)
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (hf_loss, hf_grads), (packed_loss, packed_grads) = results
    assert packed_loss == pytest.approx(hf_loss, rel=1e-5)
    for name, grad in hf_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_training_is_deterministic_and_both_loops_learn():
    tok = build_word_tokenizer(CORPUS)
    shape = ModelShape(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    runs = {}
    for loop in ("packed", "packed", "hf"):
        model, history = train_causal_lm(CORPUS, tok, shape, TrainConfig(steps=150, batch_size=8, warmup_steps=5, loop=loop),
                                         progress=False)
        runs.setdefault(loop, []).append((history[-1]["loss"], model.state_dict()))
        first = history[0]["loss"]
    (loss_a, state_a), (loss_b, state_b) = runs["packed"]
    assert loss_a == loss_b and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    # Same losses up to float rounding, far below the untrained loss.
    assert loss_a == pytest.approx(runs["hf"][0][0], rel=0.05)
    assert loss_a < 0.5 * first


IN_CONTEXT = ["Ana was born in Rome ; Ana is from Italy", "Bo works for Acme Corp", "Cy was born in Paris ; Cy is from France"]


def test_loss_starts_after_the_separator_in_statements_that_have_one():
    tok = build_word_tokenizer(IN_CONTEXT)
    data = tokenize_corpus(IN_CONTEXT, tok)
    starts = loss_start_positions(IN_CONTEXT, data, tok, " ; ")
    # BOS + 6 words up to and including ";" (the first target is the answer's first word); 0: no separator.
    assert starts.tolist() == [7, 0, 7]
    assert tok.convert_ids_to_tokens(int(data[0, 7])) == "Ana" and tok.convert_ids_to_tokens(int(data[0, 6])) == ";"

    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(ModelShape(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64), tok))
    # Known answer: the mean cross-entropy over the targets after the separator (and EOS), and
    # over every target of the statement without one.
    with torch.no_grad():
        log_probs = model(input_ids=data, attention_mask=(data != tok.pad_token_id).long()).logits.log_softmax(-1)
    targets = [(row, t) for row in range(len(data)) for t in range(max(1, int(starts[row])), len(data[row]))
               if data[row, t] != tok.pad_token_id]
    expected = -torch.stack([log_probs[row, t - 1, data[row, t]] for row, t in targets]).mean()
    losses = []
    for loss_fn in (hf_causal_lm_loss, packed_causal_lm_loss):
        model.zero_grad()
        loss = loss_fn(model, data, tok.pad_token_id, starts)
        loss.backward()
        losses.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (hf_loss, hf_grads), (packed_loss, packed_grads) = losses
    assert hf_loss == pytest.approx(expected.item(), rel=1e-5)
    assert packed_loss == pytest.approx(expected.item(), rel=1e-5)
    for name, grad in hf_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # The context carries no loss: the loss differs from the one over every token.
    assert hf_loss != pytest.approx(hf_causal_lm_loss(model, data, tok.pad_token_id).item(), rel=1e-3)


def test_loss_starts_after_fails_early_on_a_separator_no_statement_has():
    tok = build_word_tokenizer(IN_CONTEXT)
    config = TrainConfig(steps=2, batch_size=2, loss_starts_after=" | ")
    with pytest.raises(ValueError, match=r"loss_starts_after=' \| ' occurs in no training statement"):
        train_causal_lm(IN_CONTEXT, tok, ModelShape(hidden_size=32, num_layers=1, num_heads=4, intermediate_size=64),
                        config, progress=False)


def test_packed_loop_names_what_it_does_not_support():
    tok = build_word_tokenizer(CORPUS)
    config = llama_config(ModelShape(), tok)
    config.num_key_value_heads = 2
    with pytest.raises(ValueError, match="grouped-query attention.*training.loop=hf"):
        check_packed_support(config)


def test_threads_resolve_node_then_pipeline_then_default():
    settings = ThreadSettings(default=1, pipelines={"train": 2}, nodes={"quantize_gptq": 3, "train_model": None})
    assert settings.for_node("quantize_gptq", "quantize") == 3
    assert settings.for_node("measure_trained_model", "train") == 2
    assert settings.for_node("train_model", "train") is None  # torch's default
    assert settings.for_node("evaluate_recall", "evaluate") == 1
    assert settings.for_node("evaluate_recall", None) == 1


def test_threads_hook_sets_and_restores_torch_threads():
    """Through the hook's Kedro entry points, on the test configuration with
    ``runtime.threads`` given as runtime parameters (as ``--params`` does)."""
    from types import SimpleNamespace

    from kedro.config import OmegaConfigLoader
    from kedro.io import DataCatalog
    from kedro.pipeline import Pipeline

    from conftest import PROJECT_ROOT
    from fkr_kedro.hooks import ThreadsHook
    from fkr_kedro.run_config import set_active_config_loader

    threads = {"runtime": {"threads": {"default": 1, "pipelines": {}, "nodes": {"train_model": 2}}}}
    set_active_config_loader(OmegaConfigLoader(
        conf_source=str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="test", env="test",
        runtime_params=threads,
    ))
    initial = torch.get_num_threads()
    hook = ThreadsHook()
    try:
        hook.before_pipeline_run({}, Pipeline([]), DataCatalog())
        hook.before_node_run(SimpleNamespace(name="train_model"))
        assert torch.get_num_threads() == 2
        hook.before_node_run(SimpleNamespace(name="evaluate_recall"))
        assert torch.get_num_threads() == 1
        hook.before_node_run(SimpleNamespace(name="train_model"))
    finally:
        hook.after_pipeline_run({}, None, Pipeline([]), DataCatalog())
        set_active_config_loader(None)
    assert torch.get_num_threads() == initial
    # After the run the hook sets nothing.
    hook.before_node_run(SimpleNamespace(name="train_model"))
    assert torch.get_num_threads() == initial


# --- the training-time guard -------------------------------------------------------------


class _Stop(Exception):
    """What Ctrl-C is to a user: the run is stopped once the estimate is out."""


def _warnings_of_a_stopped_run(steps: int, bound: TrainingTime, stop_at: int, caplog) -> list:
    tok = build_word_tokenizer(CORPUS)
    shape = ModelShape(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)

    def stop(step, model):
        raise _Stop(step)

    caplog.clear()
    with caplog.at_level("WARNING", logger="fkr_kedro.modeling.train"), pytest.raises(_Stop):
        train_causal_lm(CORPUS, tok, shape, TrainConfig(steps=steps, batch_size=4, warmup_steps=1), progress=False,
                        checkpoint=stop, checkpoint_steps={stop_at}, time_bound=bound)
    return [r for r in caplog.records if hasattr(r, "estimate_seconds")]


def test_a_run_estimated_past_the_bound_warns_once_early_with_the_estimate(caplog):
    bound = TrainingTime(warn_after_minutes=0.001, estimate_after_steps=3)
    # A billion steps: the warning comes after step 4 (1 set-up step + 3 timed), once.
    found = _warnings_of_a_stopped_run(1_000_000_000, bound, stop_at=12, caplog=caplog)
    assert len(found) == 1
    record = found[0]
    assert record.estimate_seconds == pytest.approx(1e9 * record.seconds_per_step)
    assert 1e-5 < record.seconds_per_step < 10  # a real measurement of a tiny model's step
    assert "training.steps=1000000000" in record.getMessage() and "days" in record.getMessage()

    # Within the bound (the default hour), or the bound off: no warning.
    assert _warnings_of_a_stopped_run(1000, TrainingTime(estimate_after_steps=3), stop_at=12, caplog=caplog) == []
    off = TrainingTime(warn_after_minutes=None, estimate_after_steps=3)
    assert _warnings_of_a_stopped_run(1_000_000_000, off, stop_at=12, caplog=caplog) == []
    # Too few steps to estimate: no warning.
    assert _warnings_of_a_stopped_run(1_000_000_000, bound, stop_at=3, caplog=caplog) == []
