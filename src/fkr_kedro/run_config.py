"""The parameters of the run being set up, for pipelines generated from configuration.

The quantize and evaluate pipelines hold one namespaced copy per variant listed in
``parameters``, so building them needs the parameters of the active environment
(``--env``). Kedro builds pipelines after it creates the context; the hook in
``hooks.py`` records that context's config loader here. Outside a session (a test that
imports a pipeline, ``kedro registry list``) the configuration is read from ``./conf`` in
the environment named by ``KEDRO_ENV`` (default ``local``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kedro.config import AbstractConfigLoader, OmegaConfigLoader

_active_loader: AbstractConfigLoader | None = None


def set_active_config_loader(loader: AbstractConfigLoader | None) -> None:
    global _active_loader
    _active_loader = loader


def active_parameters() -> dict[str, Any]:
    loader = _active_loader
    if loader is None:
        loader = OmegaConfigLoader(
            conf_source=str(Path.cwd() / "conf"),
            base_env="base",
            default_run_env=os.environ.get("KEDRO_ENV", "local"),
        )
    return loader["parameters"]


def active_variants() -> list:
    """The variants of the active configuration as validated specs, in the listed order.

    ``variants`` in parameters maps each variant's name (its Kedro namespace) to its
    settings. Everything that can be checked without loading a model is checked here, when
    the pipelines are built, so a bad variant stops the run before anything is trained or
    loaded; the quantize step checks group sizes against the real model again.
    """
    from .quantization.variants import VariantError, VariantSpec, validate_variants

    params = active_parameters()
    specs = []
    for name, settings in (params.get("variants") or {}).items():
        try:
            specs.append(VariantSpec(name=name, **dict(settings or {})))
        except ValueError as error:  # pydantic's ValidationError is a ValueError
            raise VariantError(f"variant {name!r}: {error}") from None
    shape = params.get("model_shape") or {}
    widths = [shape[k] for k in ("hidden_size", "intermediate_size") if k in shape]
    if (params.get("base_model") or {}).get("kind", "train") != "train":
        # A loaded model's widths are not in parameters: quantize() checks its config.
        widths = []
    return validate_variants(specs, widths)


def bind(func, *args, **kwargs):
    """``functools.partial`` that keeps ``func``'s name, for nodes specialised per variant
    (Kedro names nodes and kedro-viz shows functions by it)."""
    from functools import partial, update_wrapper

    return update_wrapper(partial(func, *args, **kwargs), func)
