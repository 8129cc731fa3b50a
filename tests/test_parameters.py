"""Typed parameters: the base configuration is the typed defaults, and a bad key or value in
any parameters file (or --params) stops `kedro run` before anything is written, naming the
key and where it is set."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import PROJECT_ROOT, run_kedro


def _configured(env: str = "local") -> dict:
    from kedro.config import OmegaConfigLoader

    return OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env=env)["parameters"]


def test_the_base_configuration_states_the_typed_defaults():
    """One source of truth: every section of conf/base equals the model's defaults (the
    variant list and the scaling study are configuration only)."""
    from fkr_kedro.parameters import StudyParameters, validate_parameters

    configured = validate_parameters(_configured()).model_dump()
    defaults = StudyParameters().model_dump()
    for section in set(defaults) - {"variants", "scaling", "capacity"}:
        assert configured[section] == defaults[section], section


@pytest.mark.parametrize("env", ["test", "smollm2", "paper", "paper_sim"])
def test_every_environment_validates(env):
    from fkr_kedro.parameters import validate_parameters

    params = validate_parameters(_configured(env))
    assert params.variants["fp"] == {"method": "fp"}


def _files() -> list[Path]:
    return sorted((PROJECT_ROOT / "conf/base").glob("parameters_*.yml"))


def _validate(project: Path, env: str = "test", params: dict | None = None):
    """What `kedro run` does first when it builds the pipelines: validate the project's
    merged parameters (base, the env, --params)."""
    from kedro.config import OmegaConfigLoader

    from fkr_kedro.run_config import set_active_config_loader, study_parameters

    set_active_config_loader(
        OmegaConfigLoader(str(project / "conf"), base_env="base", default_run_env=env, runtime_params=params)
    )
    try:
        return study_parameters()
    finally:
        set_active_config_loader(None)


@pytest.mark.parametrize("name", [p.name for p in _files()])
def test_a_misspelt_key_in_any_parameters_file_is_named_with_its_file(kedro_project, name):
    from fkr_kedro.parameters import ParameterError

    path = kedro_project / "conf/base" / name
    data = yaml.safe_load(path.read_text())
    section = next(key for key, value in data.items() if isinstance(value, dict) and key != "variants")
    data[section]["batch_sise"] = 3
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ParameterError) as error:
        _validate(kedro_project, env="local")
    assert f"{section}.batch_sise (conf/base/{name}): unknown key" in str(error.value)


@pytest.mark.parametrize(
    "override, key, problem",
    [
        ({"training": {"steps": 0}}, "training.steps", "greater than 0"),
        ({"evaluation_sample": {"max_per_relation": 0}}, "evaluation_sample.max_per_relation", "greater than 0"),
        ({"world": {"n_people": 0}}, "world.n_people", "greater than 0"),
        ({"world": {"held_out_fraction": 1.5}}, "world", "held_out_fraction must lie in (0, 1)"),
        ({"knowledge": {"source": "wikipedia"}}, "knowledge.source", "'synthetic', 'world_facts' or 'lre_twohopfact'"),
        ({"probe": {"probes": {"test_size": 0}}}, "probe.probes", "test_size must lie in (0, 1)"),
    ],
)
def test_out_of_range_values_name_the_key(kedro_project, override, key, problem):
    from fkr_kedro.parameters import ParameterError

    with pytest.raises(ParameterError) as error:
        _validate(kedro_project, params=override)
    message = str(error.value)
    assert f"{key} (--params)" in message and problem in message, message


def test_a_bad_value_in_an_environment_names_that_file(kedro_project):
    from fkr_kedro.parameters import ParameterError

    path = kedro_project / "conf/test/parameters.yml"
    data = yaml.safe_load(path.read_text())
    data["training"]["steps"] = 0
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ParameterError, match=r"training\.steps \(conf/test/parameters\.yml\): Input should be greater than 0"):
        _validate(kedro_project)


def test_kedro_run_stops_before_anything_is_written(kedro_project):
    """The whole default pipeline, data_prep first: nothing is written, not even the prompts."""
    from fkr_kedro.parameters import ParameterError

    path = kedro_project / "conf/test/parameters.yml"
    data = yaml.safe_load(path.read_text())
    data["world"]["n_peple"] = 10
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ParameterError) as error:
        run_kedro(kedro_project, params={"training": {"steps": 0}, "evaluation_sample": {"max_per_relation": 0}})
    message = str(error.value)
    assert "evaluation_sample.max_per_relation (--params): Input should be greater than 0" in message
    assert "world.n_peple (conf/test/parameters.yml): unknown key" in message
    assert "training.steps (--params): Input should be greater than 0" in message
    assert not any(p.is_file() for p in (kedro_project / "data").rglob("*"))
