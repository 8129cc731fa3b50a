"""The ``auto`` thread policy: one thread for a small model, the free cores for a large one."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch

from fkr_kedro.modeling.threads import AUTO_MIN_PARAMETERS, choose_threads, free_cores, parameter_count
from fkr_kedro.parameters import ThreadSettings


@pytest.mark.parametrize(
    "parameters, free, cores, expected",
    [
        (500_000, 2.0, 2, 1),  # the embedded default: one thread even on an idle machine
        (None, 2.0, 2, 1),  # unknown size: one
        (135_000_000, 1.95, 2, 2),  # SmolLM2 on an idle 2-core machine: both cores
        (135_000_000, 0.9, 2, 1),  # beside one busy process: one
        (135_000_000, 0.1, 2, 1),  # fully busy: still one
        (7_000_000_000, 15.6, 16, 16),
        (7_000_000_000, 40.0, 16, 16),  # never more than the cores
    ],
)
def test_choose_threads(parameters, free, cores, expected):
    assert choose_threads(parameters, free, cores) == expected


def test_free_cores_is_a_share_of_the_machine():
    free = free_cores(interval=0.05, cores=2)
    assert 0.0 <= free <= 2.0


def test_parameter_count_reads_the_config_without_weights(tmp_path):
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    config.save_pretrained(tmp_path)
    per_layer = 16 * 16 * 2 + 16 * 8 * 2 + 3 * 16 * 32 + 2 * 16  # q, o; k, v (one kv head of 8); mlp; norms
    assert parameter_count(tmp_path) == 2 * 100 * 16 + 2 * per_layer + 16
    assert parameter_count(tmp_path / "missing") is None
    (tmp_path / "config.json").write_text("{not json")
    assert parameter_count(tmp_path) is None


def test_auto_is_the_default_and_other_words_are_refused():
    assert ThreadSettings().default == "auto" and ThreadSettings().auto_min_parameters == AUTO_MIN_PARAMETERS
    with pytest.raises(ValueError):
        ThreadSettings(default="fast")


def test_threads_hook_gives_a_small_base_model_one_thread_under_auto(tmp_path):
    from fkr_kedro.hooks import ThreadsHook

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 50, "hidden_size": 8,
                                                     "intermediate_size": 16, "num_hidden_layers": 1,
                                                     "num_attention_heads": 2}))
    initial = torch.get_num_threads()
    hook = ThreadsHook()
    hook._settings, hook._initial, hook._base_model = ThreadSettings(), initial, str(tmp_path)
    try:
        torch.set_num_threads(2)
        hook.before_node_run(SimpleNamespace(name="evaluate_recall"))
        assert torch.get_num_threads() == 1 and 0 < hook._parameters < AUTO_MIN_PARAMETERS
        # Above the bound the free cores decide: at least one, at most the machine's.
        hook._settings = ThreadSettings(auto_min_parameters=1)
        hook.before_node_run(SimpleNamespace(name="evaluate_recall"))
        assert 1 <= torch.get_num_threads() <= (os.cpu_count() or 1)
        # Quantization keeps one thread under auto whatever the model (GPTQModel's own workers).
        torch.set_num_threads(2)
        hook.before_node_run(SimpleNamespace(name="gptq_w4_g32.quantize"))
        assert torch.get_num_threads() == 1
    finally:
        hook._restore()
    assert torch.get_num_threads() == initial
