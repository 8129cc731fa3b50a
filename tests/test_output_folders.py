"""One output folder per study (issue 31): every environment other than the default writes
under ``data/<env>/`` (``${study_root:}`` in the catalogs), so a second study leaves the first
one's files byte-identical, and every command the project prints carries the study's
``--env`` and ``--params``."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from kedro.io import DatasetError

from conftest import run_kedro
from fkr_kedro.datasets.integrity import check_model_directory
from fkr_kedro.hooks import run_chain_advice
from fkr_kedro.run_config import StudyConfigLoader, active_study_root, set_active_config_loader, study_root


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_the_catalog_follows_the_environment_and_a_new_one_needs_no_edits(kedro_project):
    shutil.copytree(kedro_project / "conf" / "test", kedro_project / "conf" / "mine")  # a user's own env
    paths = {}
    for env in ("local", "test", "mine"):
        catalog = StudyConfigLoader(str(kedro_project / "conf"), env=env, base_env="base", default_run_env="local")["catalog"]
        paths[env] = (catalog["one_hop_prompts"]["filepath"], catalog["{variant}.model@variant"]["path"],
                      catalog["report_html"]["filepath"])
    assert paths["local"] == ("data/05_model_input/one_hop_prompts.parquet", "data/06_models/variants/{variant}",
                              "data/08_reporting/report.html")
    assert paths["test"] == ("data/test/05_model_input/one_hop_prompts.parquet", "data/test/06_models/variants/{variant}",
                             "data/test/08_reporting/report.html")
    assert paths["mine"][0] == "data/mine/05_model_input/one_hop_prompts.parquet"
    assert study_root(None) == study_root("local") == "data"


def test_a_second_study_leaves_the_first_byte_identical(kedro_project, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FKR_MLFLOW_PARENT_RUN_ID", raising=False)
    run_kedro(kedro_project, "data_prep", env="test")
    first = kedro_project / "data" / "test"
    before = _hashes(first)
    assert "05_model_input/one_hop_prompts.parquet" in before and "02_intermediate/world_summary.json" in before

    # A second study: its own env (a changed world), with no other edit anywhere.
    shutil.copytree(kedro_project / "conf" / "test", kedro_project / "conf" / "other")
    run_kedro(kedro_project, "data_prep", env="other", params={"world": {"seed": 7}})
    second = _hashes(kedro_project / "data" / "other")
    assert set(second) == set(before)  # the same tables, in a folder of its own
    assert second["05_model_input/one_hop_prompts.parquet"] != before["05_model_input/one_hop_prompts.parquet"]
    assert _hashes(first) == before
    assert not (kedro_project / "data" / "05_model_input").exists()  # the default study's folder untouched
    assert active_study_root() == Path("data/other")

    # One MLflow store per project (mlflow.db at its root), each study's run tagged with its env.
    assert (kedro_project / "mlflow.db").is_file()
    runs = mlflow.MlflowClient(f"sqlite:///{kedro_project / 'mlflow.db'}").search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(f"sqlite:///{kedro_project / 'mlflow.db'}").search_experiments()]
    )
    assert sorted(r.data.tags.get("kedro_env") for r in runs) == ["other", "test"]

    # Commands printed by this study carry its --env and --params.
    assert run_chain_advice(["probe"]) == (
        "the 'probe' pipeline writes it; run `kedro run --pipeline=probe --env=other --params=world.seed=7` first"
    )


def test_an_integrity_error_names_the_rebuild_command_of_its_study(kedro_project, monkeypatch):
    """A variant folder without a manifest is refused; the command to rebuild it is the study's."""
    monkeypatch.chdir(kedro_project)
    loader = StudyConfigLoader(str(kedro_project / "conf"), env="test", base_env="base", default_run_env="local",
                               runtime_params={"training": {"steps": 5}})
    set_active_config_loader(loader)
    variant = kedro_project / loader["catalog"]["{variant}.model@variant"]["path"].format(variant="rtn_w2_g32")
    variant.mkdir(parents=True)
    (variant / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(DatasetError) as error:
        check_model_directory(variant)
    message = str(error.value)
    assert "data/test/06_models/variants/rtn_w2_g32" in message
    assert "`kedro run --namespaces=rtn_w2_g32 --env=test --params=training.steps=5`" in message
    assert "`kedro run --pipeline=quantize --env=test --params=training.steps=5`" in message
