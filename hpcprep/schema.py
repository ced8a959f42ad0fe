"""A small declarative schema for TOML tables: types, defaults, allowed values.

Config sections, standardization steps and sampling modes all describe their
keys with :class:`Param`, so that every bad key or value is reported the same
way: naming the key's dotted path and what is allowed.
"""

import math
from dataclasses import dataclass, make_dataclass
from typing import Any, Callable, Union

from .errors import ConfigError

REQUIRED = object()

#: Every integer in a config fits a signed 64-bit integer (NumPy, HDF5 attributes, MPI counts).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

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
    allow_inf : bool
        Whether ``inf``/``-inf`` are allowed (e.g. "no deadline"). Every number in
        the value, at any depth, is checked before ``check`` runs: NaN is never
        allowed, infinities only with ``allow_inf``, integers must fit int64.
    nested : bool
        The value is a table (or a list of tables) validated by its own spec
        later, which checks its numbers with the precise key: not looked into here.
    """

    types: Any
    default: Any = REQUIRED
    choices: tuple | None = None
    check: Callable[[Any], str | None] | None = None
    doc: str = ""
    allow_inf: bool = False
    nested: bool = False

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


def number_problem(value, allow_inf: bool = False):
    """The first bad number in ``value`` (a scalar, list or table, at any depth), or None.

    NaN is never a valid setting, an infinity only where ``allow_inf``, and an
    integer must fit a signed 64-bit integer.

    Returns
    -------
    None, or (path, item, problem): where the item sits below ``value`` (``""``,
    ``"[2]"``, ``".key"``), the item, and what is wrong with it.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            return "", value, "out of range: integers must lie in [-2**63, 2**63 - 1]"
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return "", value, "nan is not allowed here, give a number"
        if math.isinf(value) and not allow_inf:
            return "", value, "must be a finite number"
        return None
    if isinstance(value, dict):
        items = ((f".{k}", v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for at, item in items:
        bad = number_problem(item, allow_inf)
        if bad:
            return at + bad[0], bad[1], bad[2]
    return None


def validate_value(value, param: Param, where: str):
    """Check one value against ``param``; return it (ints promoted to float where asked)."""
    if not _type_ok(value, param.types):
        raise ConfigError(f"{where} = {value!r}: expected {param.allowed()}")
    bad = None if param.nested else number_problem(value, param.allow_inf)
    if bad:
        at, item, problem = bad
        if not at and isinstance(value, int) and param.check is not None:
            problem = param.check(value) or problem   # the key's own range, where it has one
        raise ConfigError(f"{where}{at} = {item!r}: {problem}")
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


def section_class(name: str, spec: dict[str, Param], module: str, doc: str,
                  types: dict | None = None, extra=()) -> type:
    """A frozen dataclass with one field per key of ``spec``, named as in TOML, then ``extra``.

    The spec stays the one list of keys, types, defaults and docs: the class is
    built from it, and an instance from the table :func:`validate_table` returns
    (``cls(**table)``), so every field is filled in. Values are kept as validated
    (lists and tables stay lists and dicts).

    Parameters
    ----------
    name : str
        The class name; ``module.name`` must be where the class is bound (pickle).
    spec : dict of str -> Param
        The table's keys.
    module : str
        The defining module's ``__name__``.
    doc : str
        First lines of the docstring; the fields' docs follow.
    types : dict of str -> type, optional
        Field annotations that replace the spec's types (e.g. a section's own class).
    extra : sequence of (name, type, doc)
        Fields after the spec's: values derived when the config is parsed.
    """
    types = types or {}
    fields = [(key, types.get(key) or _annotation(p.types)) for key, p in spec.items()]
    fields += [(key, ftype) for key, ftype, _ in extra]
    cls = make_dataclass(name, fields, frozen=True)
    cls.__module__ = module
    lines = [f"{key} : {types[key].__name__ if key in types else p.allowed()}\n    {p.doc}"
             for key, p in spec.items()]
    lines += [f"{key} : {getattr(ftype, '__name__', ftype)}\n    {text}" for key, ftype, text in extra]
    cls.__doc__ = f"{doc}\n\nAttributes\n----------\n" + "\n".join(lines)
    return cls


def _annotation(types):
    return Union[types] if isinstance(types, tuple) else types


def positive(value) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value) -> str | None:
    return None if value >= 0 else "must be >= 0"


def fraction(value) -> str | None:
    return None if 0 <= value <= 1 else "must be between 0 and 1"


#: Rows per read (chunks, calibration): at most 2**31 - 1, the largest MPI count.
ROWS_MAX = 2**31 - 1


def read_rows(value) -> str | None:
    """Rows of one read (``input.chunk_rows``, ``plan.calibration_rows``): 1 .. 2**31 - 1."""
    return positive(value) or (None if value <= ROWS_MAX else "must be <= 2**31 - 1")


def between(lo, hi, text: str | None = None) -> Callable[[Any], str | None]:
    """A check that ``lo <= value <= hi`` (``text``: how the range is written in messages)."""
    shown = text or f"[{lo}, {hi}]"

    def check(value):
        return None if lo <= value <= hi else f"must lie in {shown}"

    return check


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
    if not isinstance(op, str) or op not in registry:
        raise ConfigError(f"{where}.op = {op!r}: unknown {what}; known: {known}")
    cls = registry[op]
    return cls, validate_table({k: v for k, v in table.items() if k != "op"}, cls.params, where)
