"""Composing and checking a configuration: the schema of every value (schema.py) and the checks that relate
values and run before any compute (validate.py). The YAML groups themselves are package data, roar/conf/."""

from roar.config.validate import (
    check_group_choices,
    check_writable,
    first_difference,
    method_names,
    validate,
)
from roar.errors import ConfigError

__all__ = [
    "ConfigError",
    "check_group_choices",
    "check_writable",
    "first_difference",
    "method_names",
    "validate",
]
