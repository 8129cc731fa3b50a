"""Project settings (https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

from fkr_kedro.hooks import ActiveConfigHook

HOOKS = (ActiveConfigHook(),)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
