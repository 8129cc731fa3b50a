"""One rule decides whether a stored variant or base model is current: the quantize node
(`kedro run`) and `kedro submit`'s keep-check reach the same decision; the calibration texts
come from one helper."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fkr_kedro.datasets.hf_model import HFModelDataset
from fkr_kedro.datasets.variant_model import VariantModelDataset
from fkr_kedro.modeling.load import CausalLM
from conftest import TEST_DATA, tiny_word_lm
from fkr_kedro.quantization import api
from fkr_kedro.quantization.calibration import calibration_texts

WORDS = "the capital of france is paris and germany berlin".split()


def test_calibration_texts_are_a_seeded_shuffle_cut_to_size():
    corpus = [f"statement {i}" for i in range(200)]
    first = calibration_texts(corpus, seed=0, size=128)
    assert len(first) == len(set(first)) == 128 and set(first) <= set(corpus)
    assert first != corpus[:128]  # shuffled: the first N are not the corpus's first entities
    assert calibration_texts(corpus, seed=0, size=128) == first
    assert calibration_texts(corpus, seed=1, size=128) != first
    assert calibration_texts(corpus, seed=0)[:128] == first  # the same order, cut later
    assert corpus == [f"statement {i}" for i in range(200)]  # the input is left alone


def _tiny_lm() -> CausalLM:
    return tiny_word_lm(WORDS, hidden_size=64, intermediate_size=128)


@pytest.fixture
def study(kedro_project):
    """The test configuration's project with a base model, its corpus and its rtn and gptq
    variants written by the quantize node and saved by their dataset."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    HFModelDataset(str(kedro_project / TEST_DATA / "06_models/base")).save(_tiny_lm())
    corpus = kedro_project / TEST_DATA / "05_model_input/train_corpus.txt"
    corpus.parent.mkdir(parents=True)
    corpus.write_text("".join(f"the capital of {w} is {w}\n" for w in WORDS * 8))
    bootstrap_project(kedro_project)

    def session(params: dict | None = None):
        return KedroSession.create(project_path=kedro_project, env="test", runtime_params=params)

    return kedro_project, session


def _run_decision(project: Path, params, name: str, monkeypatch) -> bool:
    """Whether `kedro run`'s quantize node would quantize ``name`` again (not kept)."""
    from fkr_kedro.pipelines.quantize.nodes import quantize_variant
    from fkr_kedro.run_config import active_variants

    spec = next(s for s in active_variants(params) if s.name == name)
    written = []
    monkeypatch.setattr(api, "_write_variant", lambda *args: written.append(args))
    made = quantize_variant(
        project / TEST_DATA / "06_models/base", (project / TEST_DATA / "05_model_input/train_corpus.txt").read_text(),
        project / TEST_DATA / "06_models/variants" / name, params.quantize, spec,
    )
    monkeypatch.undo()
    assert made.kept == (not written)
    return not made.kept


def test_submit_keeps_exactly_the_variants_kedro_run_keeps(study, monkeypatch):
    """A changed calibration text (the corpus the texts are drawn from) rebuilds a calibrated
    variant in both; the RTN variant, which takes no calibration texts, is kept by both."""
    from fkr_kedro.cli import _variant_changed
    from fkr_kedro.pipelines.quantize.nodes import quantize_variant
    from fkr_kedro.run_config import active_variants, study_parameters

    project, session = study
    with session() as s:
        catalog, params = s.load_context().catalog, study_parameters()
        corpus = (project / TEST_DATA / "05_model_input/train_corpus.txt").read_text()
        for spec in active_variants(params):
            if spec.name in ("gptq_w4_g32", "rtn_w2_g32"):
                stored = project / TEST_DATA / "06_models/variants" / spec.name
                VariantModelDataset(str(stored)).save(
                    quantize_variant(project / TEST_DATA / "06_models/base", corpus, stored, params.quantize, spec)
                )
        for name in ("gptq_w4_g32", "rtn_w2_g32"):
            assert _run_decision(project, params, name, monkeypatch) is False
            assert _variant_changed(name, catalog, params) is None

        (project / TEST_DATA / "05_model_input/train_corpus.txt").write_text(corpus.replace("berlin", "paris"))
        assert _run_decision(project, params, "gptq_w4_g32", monkeypatch) is True
        why = _variant_changed("gptq_w4_g32", catalog, params)
        assert why is not None and "calibration_sha256" in why
        assert _run_decision(project, params, "rtn_w2_g32", monkeypatch) is False
        assert _variant_changed("rtn_w2_g32", catalog, params) is None
        assert _variant_changed("bnb_int8", catalog, params) == "no variant there"


def test_submit_runs_the_shared_job_again_when_the_training_settings_change(study):
    """`kedro run --params=training.steps=301` trains the base model again; so does submit's
    shared job: the base model's recorded training is not the configured one."""
    from fkr_kedro.cli import _shared_changed
    from fkr_kedro.modeling.train import training_fingerprint
    from fkr_kedro.pipelines.train.nodes import train_model
    from fkr_kedro.run_config import study_parameters

    project, session = study
    with session() as s:
        catalog, params = s.load_context().catalog, study_parameters()
        assert _shared_changed(catalog, params) == "no record of the base model's training"
        corpus = catalog.load("train_corpus")
        short = dataclasses.replace(params.training, steps=2)
        _, _, fingerprint = train_model(corpus, params.model_shape, short)  # what the train node records
        assert fingerprint == training_fingerprint(corpus.splitlines(), params.model_shape, short)
        catalog.save("base_model_training", training_fingerprint(corpus.splitlines(), params.model_shape, params.training))
        assert _shared_changed(catalog, params) is None
    with session({"training": {"steps": 301}}) as s:
        catalog, params = s.load_context().catalog, study_parameters()
        assert params.training.steps == 301
        assert _shared_changed(catalog, params) == (
            "the base model was trained with other settings (training.steps: 300 -> 301)"
        )
