"""Property-based fuzzing of the config parser: random TOML values at random keys of a valid
config, random ``--set`` overrides, random step and sampling tables. Every outcome is either a
valid config whose numbers are all finite and in range, or a ConfigError: never another
exception. Bounded and derandomized, so it runs in seconds and the same way every time.
"""

import json
import math
from dataclasses import asdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcprep.config import apply_overrides, parse_config
from hpcprep.errors import ConfigError
from hpcprep.sampling import MODES
from hpcprep.steps import STEPS

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BASE = {
    "seed": 7,
    "input": {"paths": ["raw/*.csv"], "format": "csv", "features": ["a", "b", "c"], "label": "y",
              "categorical": ["k"], "chunk_rows": 1000, "delimiter": ",", "on_bad_row": "drop"},
    "layout": {"fused": True},
    "standardize": [{"steps": [
        {"op": "dropna"}, {"op": "categorical", "columns": ["k"], "min_count": 2},
        {"op": "impute", "strategy": "median", "per_column": {"a": 1.5, "b": "mean"}},
        {"op": "validate", "rules": {"a": {"min": 0.0, "max": 10.0}}},
        {"op": "outliers", "method": "quantile", "q_lo": 0.01, "q_hi": 0.99},
        {"op": "scale", "method": "minmax", "feature_range": [-1.0, 1.0]},
        {"op": "select", "max_missing": 0.5}]}],
    "sample": [{"op": "sample", "fraction": 0.5}, {"op": "split", "splits": {"train": 0.8, "val": 0.2}}],
    "output": {"path": "out", "dtype": "float32", "shard_sizes": []},
    "resources": {"memory_per_rank": "1GiB", "device": "cpu"},
    "plan": {"balance": "speeds", "speeds": [1.0, 2.0], "calibration_rows": 100},
    "train": {"model": "mlp", "hidden": [8], "lr": 0.1, "batch_size": 64, "seed": 3,
              "emulate_slowdown": {"1": 2.0}},
}

#: Numbers that broke parsers before: beyond int64, uint64, float overflow, and the edges.
EDGE_INTS = [2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 10**30, -1, 0, 2**31, 2**31 - 1]
EDGE_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 0.5, 1.0]

scalars = st.one_of(
    st.sampled_from(EDGE_INTS), st.integers(), st.integers(-5, 5),
    st.sampled_from(EDGE_FLOATS), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["", "1e400", "-1", "nan", "2GiB", "auto", "shuffle", "x" * 300, "a,b"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["op", "n", "a", "min", "train", "x"]), inner, max_size=3)),
    max_leaves=6)


def toml_value(v) -> str:
    """``v`` as an inline TOML value (what tomllib reads back as ``v``)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_text(table: dict) -> str:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in table.items())


def key_paths(node, prefix=()):
    """Every key path of a nested table (list items by index), tables included."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out += key_paths(v, prefix + (k,))
    return out


PATHS = key_paths(BASE)


def put(table, path, value):
    node = table
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return table


def bad_numbers(value, at=""):
    """Paths of numbers in a validated config that no key allows: NaN, inf, beyond int64."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [] if -(2**63) <= value < 2**63 else [at]
    if isinstance(value, float):
        return [] if math.isfinite(value) else [at]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [p for k, v in items for p in bad_numbers(v, f"{at}.{k}")]


def check_outcome(text: str, overrides=(), world_size: int = 2) -> None:
    """parse_config gives a config with every number finite and within int64, or a ConfigError."""
    try:
        cfg = parse_config(text, "fuzz.toml", overrides, world_size, base_dir="/tmp")
    except ConfigError as e:
        msg = str(e)
        assert msg and "\n" not in msg.strip("\n") or msg.startswith("fuzz.toml: not valid TOML")
        return
    body = {k: v for k, v in asdict(cfg).items() if k not in ("text", "world_size")}
    assert not bad_numbers(body), bad_numbers(body)
    assert 0 <= cfg.seed < 2**63
    assert 0 < cfg.resources.memory_bytes <= 2**62


def test_base_config_is_valid():
    check_outcome(toml_text(BASE))
    cfg = parse_config(toml_text(BASE), "fuzz.toml", (), 2, base_dir="/tmp")
    assert cfg.sample[1]["splits"] == {"train": 0.8, "val": 0.2}


@FUZZ
@given(path=st.sampled_from(PATHS), value=values, world_size=st.integers(1, 4))
def test_random_value_at_a_key(path, value, world_size):
    table = put(json.loads(json.dumps(BASE)), path, value)
    check_outcome(toml_text(table), world_size=world_size)


@FUZZ
@given(path=st.sampled_from(PATHS), extra=st.sampled_from(["n", "op", "zz", "0", "1", "-1"]),
       value=values)
def test_random_key_inside_a_table(path, extra, value):
    table = json.loads(json.dumps(BASE))
    node = table
    for k in path:
        node = node[k]
    if isinstance(node, dict):
        node[extra] = value
    elif isinstance(node, list):
        node.append(value)
    check_outcome(toml_text(table))


RAW_VALUES = ["1e400", "-1e400", "nan", "inf", "99999999999999999999999", "-9223372036854775809",
              "[nan]", "{ a = inf }", "[[1, 2], [3]]", "true", "\"\"", "{", "]", "'x'", "0x10",
              "1_000", "2023-01-01", "-0", "+inf", "1e-400"]


@FUZZ
@given(sets=st.lists(st.tuples(
    st.one_of(st.sampled_from([".".join(map(str, p)) for p in PATHS]),
              st.sampled_from(["seed.x", "input.paths.0.x", "sample.9.n", "sample.x", "a.b.c",
                               "standardize.0.steps.0.op.x", "layout", "train.hidden.0"])),
    st.one_of(st.sampled_from(RAW_VALUES), values.map(toml_value), st.text(max_size=6))),
    min_size=1, max_size=3))
def test_random_set_overrides(sets):
    overrides = [f"{k}={v}" for k, v in sets]
    try:
        apply_overrides(BASE, overrides)
    except ConfigError:
        pass
    check_outcome(toml_text(BASE), overrides)


#: Values of op parameters: mostly numbers at the edges (the keys are right, so a bad number
#: is what the parser has to catch), sometimes anything.
edge_numbers = st.sampled_from(EDGE_FLOATS + EDGE_INTS)
op_values = st.one_of(edge_numbers, st.lists(st.sampled_from(EDGE_FLOATS), min_size=2, max_size=2),
                      st.dictionaries(st.sampled_from(["a", "b"]), edge_numbers, max_size=2),
                      st.dictionaries(st.sampled_from(["a"]), st.dictionaries(
                          st.sampled_from(["min", "max"]), edge_numbers), max_size=1),
                      values)


def op_tables(registry):
    """Tables ``{ op = NAME, KEY = value }``: a key of that op with a random (mostly edge) value."""
    pairs = [(op, key) for op in sorted(registry) for key in sorted(registry[op].params) or [None]]
    return st.tuples(st.sampled_from(pairs), op_values).map(
        lambda p: {"op": p[0][0]} if p[0][1] is None else {"op": p[0][0], p[0][1]: p[1]})


@FUZZ
@given(steps=st.lists(op_tables(STEPS), min_size=1, max_size=1))
def test_random_step_tables(steps):
    table = json.loads(json.dumps(BASE))
    table["standardize"] = [{"steps": steps}]
    check_outcome(toml_text(table))


@FUZZ
@given(layers=st.lists(op_tables(MODES), min_size=1, max_size=2))
def test_random_sampling_tables(layers):
    table = json.loads(json.dumps(BASE))
    table["sample"] = layers
    check_outcome(toml_text(table))
