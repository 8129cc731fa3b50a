"""Every stored table and activation cache that a later stage reads is verified on load
(datasets/integrity.py, datasets/verified.py, datasets/activations.py): on the real files of
the test study, a damaged prompt table or cache is one error naming the file and the command
that rebuilds it (with the study's --env), no summary is written from a damaged cache, the
printed command repairs it, and every NaN of the drift table carries its reason."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DatasetError

from conftest import run_kedro
from fkr_kedro.datasets.integrity import artifact_manifest_path

VARIANT = "gptq_w4_g32"
SUMMARIES = ["summarize_probes", "summarize_drift", "summarize_cnst", "summarize_entrec", "summarize_attribution"]
RESULTS = ["probe_results", "drift_results", "cnst_results", "entrec_results", "attribution_results"]


@pytest.fixture
def study(tracked_study, tmp_path, monkeypatch) -> Path:
    """A copy of the tracked test study's project (its data included), the working directory."""
    project = tmp_path / "study"
    shutil.copytree(tracked_study.project, project, ignore=shutil.ignore_patterns("mlruns", "mlflow.db", "logs"))
    monkeypatch.chdir(project)
    # Its own store, by absolute path: mlflow caches stores by URI within a process, so a
    # relative sqlite:///mlflow.db would reach the previous test's copy.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    return project


def _catalog(project: Path):
    bootstrap_project(project)
    session = KedroSession.create(project_path=project, env="test")
    return session.load_context().catalog


def _path(catalog, name: str) -> Path:
    """The file of a catalog entry (read from the catalog, not hard-coded)."""
    return Path(catalog.get(name)._describe()["filepath"])


def _same_size_random(path: Path) -> None:
    size = path.stat().st_size
    path.write_bytes(os.urandom(size))


def _half_the_rows(path: Path) -> None:
    table = pd.read_parquet(path)
    table.iloc[: len(table) // 2].to_parquet(path)


def _shuffled_object(path: Path) -> None:
    table = pd.read_parquet(path)
    table["object"] = table["object"].sample(frac=1.0, random_state=0).to_numpy()
    table.to_parquet(path)


def _random_data(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


@pytest.mark.parametrize(
    "damage, says",
    [
        (_same_size_random, "does not match the sha256"),
        (_random_data, "truncated"),
        (_half_the_rows, "rows: 256 -> 128"),
        (_shuffled_object, "one_hop_prompts.parquet"),
    ],
    ids=["same-size-bytes", "random-data", "half-the-rows", "shuffled-column"],
)
def test_a_damaged_prompt_table_is_one_error_naming_it_and_its_rebuild_command(study, damage, says):
    catalog = _catalog(study)
    path = _path(catalog, "one_hop_prompts")
    assert len(catalog.load("one_hop_prompts")) == 256  # intact: loads
    damage(path)
    with pytest.raises(DatasetError) as error:
        _catalog(study).load("one_hop_prompts")
    message = str(error.value)
    assert str(path) in message and says in message
    assert "rebuild it with `kedro run --pipeline=data_prep --env=test`" in message


@pytest.mark.parametrize("damage", [_same_size_random, _random_data], ids=["same-size-bytes", "random-data"])
def test_a_damaged_activation_cache_is_one_error_and_no_summary_is_written(study, damage):
    catalog = _catalog(study)
    cache = _path(catalog, f"{VARIANT}.activations")
    results = {name: _path(catalog, name) for name in RESULTS}
    before = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in results.items()}
    damage(cache)
    with pytest.raises(DatasetError) as error:
        run_kedro(study, pipeline="probe", node_names=SUMMARIES)
    message = str(error.value)
    assert str(cache) in message
    assert f"rebuild it with `kedro run --pipeline=probe --namespaces={VARIANT} --env=test`" in message
    after = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in results.items()}
    assert after == before  # drift_results.csv (and every sibling) byte for byte


def test_the_printed_command_rebuilds_the_cache(study):
    catalog = _catalog(study)
    cache = _path(catalog, f"{VARIANT}.activations")
    _same_size_random(cache)
    run_kedro(study, pipeline="probe", namespaces=[VARIANT])  # `kedro run --pipeline=probe --namespaces=... --env=test`
    loaded = _catalog(study).load(f"{VARIANT}.activations")
    assert loaded.shape("two_hop.resid_post.last")[0] == 230


def test_a_table_written_before_manifests_is_checked_and_recorded_once(study):
    catalog = _catalog(study)
    path = _path(catalog, "two_hop_prompts")
    manifest = artifact_manifest_path(path)
    manifest.unlink()
    table = catalog.load("two_hop_prompts")
    assert manifest.is_file() and len(table) == len(pd.read_parquet(path))
    _half_the_rows(path)
    with pytest.raises(DatasetError, match="rows: 230 -> 115"):
        _catalog(study).load("two_hop_prompts")


def test_a_table_without_manifest_is_still_checked_against_its_schema(study):
    catalog = _catalog(study)
    path = _path(catalog, "one_hop_prompts")
    artifact_manifest_path(path).unlink()
    table = pd.read_parquet(path)
    table["subject_end"] = table["subject_end"] + 100  # spans outside the prompt
    table.to_parquet(path)
    with pytest.raises(DatasetError, match=r"span .* lies outside prompt.*rebuild it with `kedro run --pipeline=data_prep --env=test`"):
        _catalog(study).load("one_hop_prompts")
    assert not artifact_manifest_path(path).exists()  # nothing recorded for a bad file


def test_a_table_that_breaks_its_schema_is_not_written(study):
    catalog = _catalog(study)
    path = _path(catalog, f"{VARIANT}.one_hop_scores")
    before = path.read_bytes()
    scores = catalog.load(f"{VARIANT}.one_hop_scores")
    with pytest.raises(DatasetError, match="missing columns .'correct'.; .*nothing was written"):
        catalog.save(f"{VARIANT}.one_hop_scores", scores.drop(columns="correct"))
    assert path.read_bytes() == before
    assert len(_catalog(study).load(f"{VARIANT}.one_hop_scores")) == len(scores)


def test_every_nan_of_the_drift_table_has_its_reason(tracked_study):
    drift = pd.read_csv(tracked_study.project / _path(_catalog(tracked_study.project), "drift_results"), keep_default_na=False, na_values=[""])
    nan = drift[drift["value"].isna()]
    assert drift.loc[drift["value"].notna(), "reason"].isna().all()
    assert nan["reason"].notna().all() and len(nan) > 0
    # The known case: the last token of every two-hop prompt is the same, so at layer 0 (the
    # embeddings) every prompt has the same vector and CKA is 0/0, for every variant.
    assert set(map(tuple, nan[["site", "layer", "metric"]].drop_duplicates().to_numpy())) == {
        ("two_hop.resid_post.last", 0, "cka")
    }
    assert nan["reason"].str.contains("same vector").all()


def test_a_sharded_cache_is_verified_file_by_file(study):
    """A cache captured in chunks (probe.capture.chunk_rows) is a folder of shards: each is in
    its manifest, so a damaged or removed shard is refused like a damaged single file."""
    from fkr_kedro.analysis.capture import CaptureConfig, capture_activations

    catalog = _catalog(study)
    model = catalog.load("fp.model@variant")
    one, two = catalog.load("one_hop_prompts").head(20), catalog.load("two_hop_prompts").head(20)
    chunked = capture_activations(
        model.model, model.tokenizer, one, two, CaptureConfig(chunk_rows=8, batch_size=8, max_act_prompts=4, progress=False)
    )
    catalog.save("fp.activations", chunked)
    folder = _path(catalog, "fp.activations").with_suffix("")
    assert _catalog(study).load("fp.activations").is_sharded
    shards = sorted(p for p in folder.rglob("*.safetensors") if p.name != "cache.safetensors")
    assert len(shards) >= 3
    _same_size_random(shards[1])
    with pytest.raises(DatasetError, match=rf"{shards[1].name} does not match the sha256.*--pipeline=probe --namespaces=fp --env=test"):
        _catalog(study).load("fp.activations")
    shards[2].unlink()
    with pytest.raises(DatasetError, match=rf"{shards[2].name} is missing"):
        _catalog(study).load("fp.activations")


def test_a_damaged_variant_names_the_rebuild_command_with_the_studys_env(study):
    catalog = _catalog(study)
    folder = Path(catalog.get(f"{VARIANT}.model@dir")._describe()["path"])
    _same_size_random(next(folder.glob("*.safetensors")))
    with pytest.raises(DatasetError, match=rf"rebuild it with `kedro run --namespaces={VARIANT} --env=test`"):
        _catalog(study).load(f"{VARIANT}.model@dir")
