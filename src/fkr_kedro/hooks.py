"""Project hooks."""

from __future__ import annotations

from kedro.framework.hooks import hook_impl

from .run_config import set_active_config_loader


class ActiveConfigHook:
    """Record the new context's config loader so generated pipelines follow ``--env``."""

    @hook_impl
    def after_context_created(self, context) -> None:
        set_active_config_loader(context.config_loader)
