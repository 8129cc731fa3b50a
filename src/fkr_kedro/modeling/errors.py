"""Errors of the modeling layer that more than one of its modules raises."""


class ModelSourceError(ValueError):
    """A model source that cannot be loaded as configured; the message names the fix."""
