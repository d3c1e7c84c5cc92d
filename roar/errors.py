"""The error every check of user input raises, and how any error becomes the one line a user reads.

`ConfigError` is raised by the configuration checks (roar/config/) and by the code that builds objects from
the configuration (datasets, models, methods); the commands print it as one line, `roar: error: ...`, and
exit with status 2. Its own module, importing nothing, so that every layer can raise it."""


class ConfigError(ValueError):
    """A configuration value that cannot work; its message is one line naming the key."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of `error`'s message, or its type's name where the message is empty: what a
    one-line report quotes of an exception raised by a library or a user's code."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
