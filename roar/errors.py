"""The error every check of user input raises (roar/config.py, and the code that builds objects from the
configuration); the commands print it as one line, `roar: error: ...`, and exit with status 2.

Its own module so that the models and datasets can raise it without importing the configuration checks,
which import them (roar/schema.py reads the models' choices)."""


class ConfigError(ValueError):
    """A configuration value that cannot work; its message is one line naming the key."""
