"""Shared fixtures: the small ``test`` configuration run in a throw-away project copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from slurm_cluster import SlurmUnavailable, running_cluster

# Session fixtures of the tracking, report, kedro-viz and notebook tests: one tracked run of
# the test configuration against a real MLflow server, shared by all of them.
from tracked_study import PROJECT_ROOT, copy_project, mlflow_server, tracked_study  # noqa: F401


# Where the `test` environment's outputs live (each environment other than the default writes
# under data/<env>/: ${study_root:} in conf/base/catalog*.yml).
TEST_DATA = Path("data") / "test"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`-n 2 --dist loadgroup`), every test of the one tracked test study
    runs on the same worker, so the study runs once per suite, not once per worker."""
    for item in items:
        # The Slurm tests too: one single-node Slurm per suite (tests/slurm_cluster.py).
        if {"tracked_study", "mlflow_server", "slurm_cluster"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("tracked_study"))


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """The single-node Slurm of the submit tests (tests/slurm_cluster.py), one per session:
    skipped where it cannot start, failed in CI, which must have it."""
    try:
        context = running_cluster(tmp_path_factory.mktemp("slurm"))
        cluster = context.__enter__()
    except SlurmUnavailable as error:
        if error.required:
            pytest.fail(str(error))
        pytest.skip(str(error))
    try:
        yield cluster
    finally:
        context.__exit__(None, None, None)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The test models are tiny: a second thread only adds synchronisation (slow on a busy
    2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_active_config_after_the_test():
    """An in-process session records its config loader (``run_config``), which the printed
    commands read (their --env and --params): no test sees the study of the one before."""
    yield
    from fkr_kedro.run_config import set_active_config_loader

    set_active_config_loader(None)


@pytest.fixture
def kedro_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's configuration in a temporary folder (data/ empty), made the
    working directory, so a test run never touches the user's data or MLflow store."""
    copy_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_world():
    """A world of 60 people: enough rows for every relation and composition, built in ms."""
    from fkr_kedro.knowledge.world import WorldConfig, generate_world

    return generate_world(
        WorldConfig(
            n_people=60, n_cities=10, n_countries=4, n_continents=3, n_companies=6, n_landmarks=8,
            n_first_names=12, n_last_names=12, n_place_parts=16,
        )
    )


def run_kedro(project: Path, pipeline: str | None = None, env: str = "test", params: dict | None = None, **run_kwargs):
    """Run a pipeline of the project in-process (``params``: as ``--params``); return the
    session's run outputs."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=params) as session:
        return session.run(pipeline_names=[pipeline] if pipeline else None, **run_kwargs)


def tiny_word_lm(words: list[str], hidden_size: int = 16, intermediate_size: int = 32):
    """A one-layer Llama with a word-level tokenizer over ``words`` (plus <unk>, <pad>),
    seeded: a real Hugging Face model directory's worth in milliseconds."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from fkr_kedro.modeling.load import CausalLM

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>", "<pad>", *words])}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(words) + 2, hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16, pad_token_id=1,
    )
    return CausalLM(model=LlamaForCausalLM(config).eval(), tokenizer=tokenizer)
