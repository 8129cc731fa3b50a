"""The ``auto`` thread policy: one thread for a small model, the free cores for a large one."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch

from fkr_kedro.modeling.threads import AUTO_MIN_PARAMETERS, free_core_threads, free_cores, parameter_count
from fkr_kedro.parameters import ThreadSettings


@pytest.mark.parametrize(
    "free, cores, expected",
    [
        (1.95, 2, 2),  # an idle 2-core machine: both cores
        (0.9, 2, 1),  # beside one busy process: one
        (0.1, 2, 1),  # fully busy: still one
        (15.6, 16, 16),
        (40.0, 16, 16),  # never more than the cores
    ],
)
def test_free_core_threads(free, cores, expected):
    assert free_core_threads(free, cores) == expected


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


@pytest.mark.parametrize(
    "node, free, initial, expected",
    [
        ("train_model", 1.97, 2, 2),  # the embedded default's training on an idle 2-core machine
        ("seed2.train_model", 1.97, 2, 2),  # a further training seed's namespace
        ("train_model", 0.95, 2, 1),  # beside one busy process: one, so no collapse
        ("train_model", 1.97, 1, 1),  # OMP_NUM_THREADS=1 (scripts/run_seeds.sh): never above it
        ("evaluate_recall", 1.97, 2, 1),  # the small model's evaluation keeps one thread
    ],
)
def test_auto_gives_training_the_free_cores(tmp_path, monkeypatch, node, free, initial, expected):
    """Training is an ``auto_free_cores`` node: the free cores at its start whatever the model,
    capped by the threads torch had when the run started; other nodes of a small model get one."""
    import fkr_kedro.modeling.threads as threads_module
    from fkr_kedro.hooks import ThreadsHook

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 50, "hidden_size": 8,
                                                     "intermediate_size": 16, "num_hidden_layers": 1,
                                                     "num_attention_heads": 2}))
    monkeypatch.setattr(threads_module, "free_cores", lambda cores=None, interval=0.25: free)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    before = torch.get_num_threads()
    hook = ThreadsHook()
    hook._settings, hook._initial, hook._base_model = ThreadSettings(), initial, str(tmp_path)
    try:
        hook.before_node_run(SimpleNamespace(name=node))
        assert torch.get_num_threads() == expected
    finally:
        hook._restore()
        torch.set_num_threads(before)


def test_the_auto_node_lists_name_nodes_that_exist(monkeypatch):
    """A renamed node would silently leave the policy: every name in auto_free_cores and
    auto_one_thread is the last part of some node of the default pipeline."""
    from kedro.framework.project import configure_project, pipelines

    from conftest import PROJECT_ROOT
    from fkr_kedro.run_config import set_active_config_loader

    monkeypatch.chdir(PROJECT_ROOT)
    set_active_config_loader(None)  # read ./conf, as `kedro registry list` does
    configure_project("fkr_kedro")
    names = {node.name.rsplit(".", 1)[-1] for node in pipelines["__default__"].nodes}
    settings = ThreadSettings()
    assert set(settings.auto_free_cores) <= names and set(settings.auto_one_thread) <= names
