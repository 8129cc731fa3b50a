"""Training checkpoints reload bit-exactly; the damage table follows known losses."""

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from fkr_kedro.capacity.checkpoints import (
    CheckpointSettings,
    damage_direction,
    damage_table,
    train_checkpoints,
)
from fkr_kedro.knowledge.world import WorldConfig, generate_world
from fkr_kedro.modeling.load import load_causal_lm
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import ModelShape, TrainConfig, train_causal_lm

SHAPE = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 32}


def test_checkpoints_reload_bit_exactly(tmp_path):
    world = WorldConfig(n_people=20, n_cities=4, n_countries=2, n_continents=2, n_companies=3, n_landmarks=4,
                        n_first_names=10, n_last_names=10, n_place_parts=8)
    settings = CheckpointSettings(size=SHAPE, world=world, training=TrainConfig(steps=6, batch_size=8, warmup_steps=1),
                                  steps=[3, 6], seeds=[0], variants={})
    corpus = generate_world(world).corpus()
    saved = {}
    dirs = train_checkpoints(tmp_path / "run", corpus, settings, seed=0, progress=False)
    assert [d.name for d in dirs] == ["step_000003", "step_000006"]
    # The same run, keeping the weights in memory at the same steps.
    tokenizer = build_word_tokenizer(corpus)
    final, _ = train_causal_lm(
        corpus, tokenizer, ModelShape(**SHAPE), TrainConfig(steps=6, batch_size=8, warmup_steps=1, seed=0), progress=False,
        checkpoint=lambda step, model: saved.update({step: {k: v.clone() for k, v in model.state_dict().items()}}),
        checkpoint_steps={3, 6},
    )
    for step, directory in zip((3, 6), dirs):
        stored = load_file(directory / "model.safetensors")
        for name, tensor in stored.items():
            assert torch.equal(tensor, saved[step][name]), (step, name)
        reloaded = load_causal_lm(directory, device="cpu")
        for name, tensor in reloaded.model.state_dict().items():
            assert torch.equal(tensor, saved[step][name]), (step, name)
    assert not torch.equal(saved[3]["model.layers.0.mlp.down_proj.weight"], saved[6]["model.layers.0.mlp.down_proj.weight"])
    # A finished run is reused, not retrained.
    mtime = (dirs[0] / "model.safetensors").stat().st_mtime_ns
    train_checkpoints(tmp_path / "run", corpus, settings, seed=0, progress=False)
    assert (dirs[0] / "model.safetensors").stat().st_mtime_ns == mtime


def test_damage_is_measured_against_the_same_checkpoint_in_full_precision():
    rows = []
    for seed, noise in enumerate((0.0, 0.01, -0.01)):
        for step, drop in ((10, 0.02), (20, 0.10)):
            rows.append({"seed": seed, "step": step, "variant": "fp", "method": "fp", "one_hop_accuracy": 0.9,
                         "held_out_accuracy": 0.5, "stored_bits": 100.0})
            rows.append({"seed": seed, "step": step, "variant": "rtn_w3", "method": "rtn",
                         "one_hop_accuracy": 0.9 - drop - noise, "held_out_accuracy": 0.5, "stored_bits": 80.0})
    damage = damage_table(pd.DataFrame(rows))
    one_hop = damage[damage["measure"] == "one_hop_accuracy"].set_index("step")
    assert one_hop.loc[10, "loss_mean"] == pytest.approx(0.02) and one_hop.loc[20, "loss_mean"] == pytest.approx(0.10)
    assert one_hop.loc[10, "loss_low"] < 0.02 < one_hop.loc[10, "loss_high"] and one_hop.loc[10, "seeds"] == 3
    bits = damage[damage["measure"] == "stored_bits"]
    assert bits["loss_mean"].tolist() == pytest.approx([0.2, 0.2])
    statements = damage_direction(damage)["statements"]
    assert any("one_hop_accuracy" in s and "grows with training" in s for s in statements)
    assert any("held_out_accuracy" in s and "does not change" in s for s in statements)
