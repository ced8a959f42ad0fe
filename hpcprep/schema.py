"""A small declarative schema for TOML tables: types, defaults, allowed values.

Config sections, standardization steps and sampling modes all describe their
keys with :class:`Param`, so that every bad key or value is reported the same
way: naming the key's dotted path and what is allowed.
"""

from dataclasses import dataclass
from typing import Any, Callable

from .errors import ConfigError

REQUIRED = object()

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a table"}


@dataclass(frozen=True)
class Param:
    """One allowed key of a table.

    Parameters
    ----------
    types : type or tuple of types
        Allowed Python types of the TOML value (``float`` also accepts ints).
    default : object
        Value when the key is absent; ``REQUIRED`` makes the key mandatory.
    choices : tuple, optional
        The allowed values.
    check : callable, optional
        ``check(value) -> str | None``: returns what is wrong, or None.
    doc : str
        One line for the config reference.
    """

    types: Any
    default: Any = REQUIRED
    choices: tuple | None = None
    check: Callable[[Any], str | None] | None = None
    doc: str = ""

    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def _type_ok(value, types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in types
    if float in types and isinstance(value, int):
        return True
    return isinstance(value, types)


def validate_value(value, param: Param, where: str):
    """Check one value against ``param``; return it (ints promoted to float where asked)."""
    if not _type_ok(value, param.types):
        raise ConfigError(f"{where} = {value!r}: expected {param.allowed()}")
    if param.choices is not None and value not in param.choices:
        raise ConfigError(f"{where} = {value!r}: expected {param.allowed()}")
    if param.check is not None:
        problem = param.check(value)
        if problem:
            raise ConfigError(f"{where} = {value!r}: {problem}")
    types = param.types if isinstance(param.types, tuple) else (param.types,)
    if float in types and int not in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value


def validate_table(table: dict, spec: dict[str, Param], where: str) -> dict:
    """Validate a table against a spec and fill in defaults.

    Parameters
    ----------
    table : dict
        The table as read from TOML.
    spec : dict of str -> Param
        The allowed keys.
    where : str
        Dotted path of the table, for messages (``""`` for the top level).

    Returns
    -------
    dict
        A new dict with every key of ``spec``.

    Raises
    ------
    ConfigError
        Naming the first unknown key, missing key or bad value.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {table!r}")
    prefix = f"{where}." if where else ""
    unknown = sorted(set(table) - set(spec))
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]}; allowed keys here: {', '.join(sorted(spec))}")
    out = {}
    for key, param in spec.items():
        if key in table:
            out[key] = validate_value(table[key], param, prefix + key)
        elif param.default is REQUIRED:
            raise ConfigError(f"missing key {prefix}{key} ({param.allowed()})")
        else:
            out[key] = param.default
    return out


def positive(value) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value) -> str | None:
    return None if value >= 0 else "must be >= 0"


def fraction(value) -> str | None:
    return None if 0 <= value <= 1 else "must be between 0 and 1"


def list_of(*types) -> Callable[[Any], str | None]:
    """A check that every item of a list has one of ``types``."""

    def check(value):
        for item in value:
            if not _type_ok(item, types):
                return f"every item must be {' or '.join(_TYPE_NAMES.get(t, t.__name__) for t in types)}"
        return None

    return check


def validate_op_table(table, registry: dict, where: str, what: str):
    """Validate a table ``{ op = NAME, ... }`` against the class registered as NAME.

    Parameters
    ----------
    table : dict
        The table from the config.
    registry : dict of str -> class
        Classes with a ``params`` spec, by op name.
    where : str
        Dotted path of the table, for messages.
    what : str
        What an op names here ("step", "sampling mode"), for messages.

    Returns
    -------
    (cls, params) : the registered class and the validated keys other than ``op``.
    """
    known = ", ".join(sorted(registry))
    if not isinstance(table, dict) or "op" not in table:
        raise ConfigError(f"{where}: needs an op; known: {known}")
    op = table["op"]
    if op not in registry:
        raise ConfigError(f"{where}.op = {op!r}: unknown {what}; known: {known}")
    cls = registry[op]
    return cls, validate_table({k: v for k, v in table.items() if k != "op"}, cls.params, where)
