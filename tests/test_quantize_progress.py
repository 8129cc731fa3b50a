"""Progress of GPTQ/AWQ quantization: the estimate from the first layers' completion times
(an injected clock), the two log lines, the bar; and on a tiny random Llama (3 layers, on
the CPU, with the real GPTQModel) that the callback saw every decoder layer."""

from __future__ import annotations

import logging
import random
import re

import pytest
import torch

from fkr_kedro.quantization import VariantSpec
from fkr_kedro.quantization.progress import LayerProgress, estimate, estimate_line, total_line

NAME = "gptq_w4_g32"
LOGGER = "fkr_kedro.quantization.progress"


def test_estimate_takes_the_rate_from_the_layers_after_the_first():
    # layer 0 done at 5 s (setup included), layer 1 at 7 s: 2 s a layer for the 8 left
    assert estimate(0.0, [5.0], 10) is None
    assert estimate(0.0, [5.0, 7.0], 10) == pytest.approx(7.0 + 8 * 2.0)
    assert estimate(1.0, [5.0, 7.0, 10.0], 10) == pytest.approx(9.0 + 7 * 2.5)
    assert estimate(0.0, [5.0, 7.0], 2) == pytest.approx(7.0)


def test_lines():
    assert estimate_line(NAME, 0.0, [5.0], 16) is None
    assert estimate_line(NAME, 0.0, [5.0, 7.0], 2) is None  # nothing left to extrapolate
    assert estimate_line(NAME, 0.0, [50.0, 53.0], 16) == (
        "quantize gptq_w4_g32: ~95 s for 16 layers (measured on the first 2)"
    )
    assert estimate_line(NAME, 0.0, [1.0, 1.2], 3) == (
        "quantize gptq_w4_g32: ~1.4 s for 3 layers (measured on the first 2)"
    )
    assert total_line(NAME, 0.0, [50.0, 53.0, 97.4], 3, 95.0) == (
        "quantize gptq_w4_g32: 3 layers in 97 s (estimated ~95 s)"
    )
    assert total_line(NAME, 0.0, [1.0, 2.5], 4, None) == "quantize gptq_w4_g32: 2 of 4 layers in 2.5 s"


@pytest.mark.parametrize("shown", [True, False])
def test_callback_logs_one_estimate_and_the_total(caplog, shown):
    times = iter([100.0, 105.0, 107.0, 110.0, 114.0])  # start, then layers 0..3 done
    caplog.set_level(logging.INFO, logger=LOGGER)
    with LayerProgress(NAME, "gptq", 4, progress=shown, clock=lambda: next(times)) as progress:
        for layer in range(4):
            progress.layer_complete(layer_idx=layer, submodule_finalized=False)
            progress.layer_complete(layer_idx=layer, submodule_finalized=True)  # packing done: not a layer
        progress.layer_complete(layer_idx=4, submodule_finalized=False)  # lm_head: not a decoder layer
    assert len(progress.done) == 4
    if shown:  # a disabled bar keeps neither count nor description
        assert progress.bar.n == 4 and progress.bar.desc == "gptq gptq_w4_g32"
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        "quantize gptq_w4_g32: ~11 s for 4 layers (measured on the first 2)",  # 7 s + 2 x 2 s
        "quantize gptq_w4_g32: 4 layers in 14 s (estimated ~11 s)",
    ]


def test_a_failing_display_does_not_stop_quantization(caplog):
    calls = []

    def clock():  # the start, layer 0, then a failure at layer 1
        calls.append(1)
        if len(calls) == 3:
            raise OSError("no clock")
        return 0.0

    caplog.set_level(logging.INFO, logger=LOGGER)
    with LayerProgress(NAME, "gptq", 4, clock=clock) as progress:
        for layer in range(4):
            progress.layer_complete(layer_idx=layer, submodule_finalized=False)
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        "quantize gptq_w4_g32: progress display stopped (OSError: no clock)"
    ]
    assert len(calls) == 3  # nothing asked of the display after it stopped


def test_callback_logs_no_total_when_quantization_fails(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with pytest.raises(RuntimeError), LayerProgress(NAME, "gptq", 4, clock=lambda: 0.0) as progress:
        progress.layer_complete(layer_idx=0, submodule_finalized=False)
        raise RuntimeError("calibration failed")
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_gptqmodel_reports_every_decoder_layer(tmp_path, monkeypatch, caplog, capsys):
    from transformers import LlamaForCausalLM

    from fkr_kedro.modeling.load import CausalLM
    from fkr_kedro.modeling.tokenizer import build_word_tokenizer
    from fkr_kedro.modeling.train import ModelShape, llama_config
    from fkr_kedro.quantization.gptq import gptqmodel, run_gptqmodel

    rng = random.Random(0)
    texts = [f"p{rng.randrange(30)} lives in c{rng.randrange(12)} and knows p{rng.randrange(30)}" for _ in range(64)]
    tokenizer = build_word_tokenizer(texts)
    shape = ModelShape(hidden_size=64, num_layers=3, num_heads=4, intermediate_size=128, max_position_embeddings=32)
    torch.manual_seed(0)
    source = tmp_path / "source"
    CausalLM(LlamaForCausalLM(llama_config(shape, tokenizer)), tokenizer).save(source)
    monkeypatch.chdir(tmp_path)
    spec = VariantSpec(method="gptq", bits=4, group_size=32, calibration_size=16, device="cpu")
    config = gptqmodel().GPTQConfig(bits=4, group_size=32, offload_to_disk=False)
    caplog.set_level(logging.INFO, logger=LOGGER)

    run_gptqmodel(source, config, texts[:16], tmp_path / "out", spec, progress=True)

    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 2, lines
    assert re.fullmatch(r"quantize gptq_w4_g32: ~[\d.]+ s for 3 layers \(measured on the first 2\)", lines[0])
    assert re.fullmatch(r"quantize gptq_w4_g32: 3 layers in [\d.]+ s \(estimated ~[\d.]+ s\)", lines[1])
    err = capsys.readouterr().err.replace("\r", "\n").splitlines()
    bar = [line for line in err if line.startswith("gptq gptq_w4_g32")]
    assert bar and "3/3" in bar[-1], bar
