"""Project settings (https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
