"""The run configuration: TOML, ``--set`` overrides, validation on rank 0.

The shape is documented in docs/config.md. Every table is described by
:class:`hpcprep.schema.Param` specs; standardization steps and sampling modes
validate their own keys through their registries. :func:`parse_config` returns a
frozen :class:`RunConfig`; its sections are dataclasses built from the specs
(:func:`hpcprep.schema.section_class`), so each key, type and default is written once.
"""

import copy
import re
import tomllib
from dataclasses import replace
from pathlib import Path

from .errors import ConfigError
from .config_plan import PLAN, PlanConfig, check_plan
from .schema import Param, between, list_of, non_negative, read_rows, section_class, validate_table

_SIZE_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "KIB": 1024, "M": 1000**2, "MB": 1000**2,
               "MIB": 1024**2, "G": 1000**3, "GB": 1000**3, "GIB": 1024**3, "T": 1000**4,
               "TB": 1000**4, "TIB": 1024**4}


#: The seed is hashed as an unsigned 64-bit integer and stored as a signed one (HDF5
#: attribute, manifest): 0 <= seed <= 2**63 - 1, so no two seeds give the same streams.
SEED_MAX = 2**63 - 1
seed_check = between(0, SEED_MAX, "[0, 2**63 - 1]")

#: Largest size a memory key may name: 2**62 bytes (4 EiB), far above any machine.
SIZE_MAX = 2**62


def parse_size(value) -> int:
    """Bytes from an int or a string such as ``"2GiB"``, ``"512 MB"``, ``"1e9"``.

    Raises
    ------
    ValueError
        Not a size, or a size that is not a finite number of at most ``SIZE_MAX`` bytes.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", str(value))
        if not m or m.group(2).upper() not in _SIZE_UNITS:
            raise ValueError(f"not a size: {value!r} (examples: 2GiB, 512MB, 1000000)")
        try:
            size = float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]
        except ValueError:
            raise ValueError(f"not a size: {value!r} (examples: 2GiB, 512MB, 1000000)") from None
    if not size <= SIZE_MAX:           # also inf (1e400) and nan
        raise ValueError("too large: at most 2**62 bytes (4 EiB)")
    return int(size)


def _size_check(value):
    try:
        return None if parse_size(value) > 0 else "must be > 0"
    except ValueError as e:
        return str(e)



INPUT = {
    "paths": Param(list, check=list_of(str), doc="globs; files in sorted order define global row ids"),
    "format": Param(str, "auto", choices=("auto", "hdf5", "npy", "csv", "parquet", "feather", "jsonl"),
                    doc="input format; auto: from the suffix (.gz/.bz2/.zst/.xz looked through)"),
    "features": Param((str, list), "features",
                      doc="HDF5 dataset of an (N, d) array; for CSV a list of column names"),
    "label": Param(str, "", doc="label dataset (HDF5), npy suffix, or CSV column; empty = none"),
    "label_type": Param(str, "numeric", choices=("numeric", "class", "auto"),
                        doc="numeric: the label is a number; class: its text values are classes, "
                            "written as int64 codes of their sorted vocabulary; auto: class where "
                            "the label column holds text, else numeric"),
    "weight": Param(str, "", doc="CSV weight column; empty = none"),
    "categorical": Param(list, [], check=list_of(str), doc="CSV categorical columns"),
    "datetime": Param(dict, {}, doc="date/timestamp columns -> derived features, e.g. "
                                    "{ ts = [\"epoch\", \"year\", \"hour\"] } (docs/inputs.md)"),
    "delimiter": Param(str, ",", check=lambda v: None if len(v) == 1 else "must be one character",
                       doc="CSV field delimiter"),
    "na_values": Param(list, ["", "NA", "NaN", "null", "None"], check=list_of(str),
                       doc="CSV strings read as missing"),
    "on_bad_row": Param(str, "drop", choices=("drop", "error"), doc="malformed CSV lines"),
    "rejects": Param(bool, False, doc="write the CSV records the reader drops to rejects.h5 "
                                      "(also on when a [[standardize]] table has rejects = true)"),
    "chunk_rows": Param(int, 262144, check=read_rows, doc="rows per chunk read"),
}

LAYOUT = {
    "fused": Param(bool, True, doc="every rank plays every role"),
    "input": Param(int, 0, check=non_negative, doc="layered: input ranks"),
    "standardize": Param(list, [], check=list_of(int), doc="layered: ranks per standardization layer"),
    "sample": Param(list, [], check=list_of(int), doc="layered: ranks per sampling layer"),
}

STANDARDIZE = {
    "steps": Param(list, [], nested=True, doc="steps in order: [{ op = ... }, ...]"),
    "rejects": Param(bool, False, doc="write dropped rows to rejects.h5"),
}

OUTPUT = {
    "path": Param(str, "out", doc="output folder"),
    "overwrite": Param(bool, False, doc="replace an existing output folder"),
    "dtype": Param(str, "float32", choices=("float32", "float64"), doc="feature dtype written"),
    "shard_sizes": Param(list, [], check=list_of(int),
                         doc="target rows per shard (one per writer rank); empty = equal"),
    "nonfinite": Param(str, "nan", choices=("nan", "none", "any"),
                       doc="non-finite features the output may hold: NaN only, none, or NaN and ±inf"),
    "max_drop_fraction": Param(float, 0.5, check=between(0, 1, "[0, 1]"),
                               doc="fail if the reader and the steps drop more of the input "
                                   "rows; 1.0 = no check"),
}

RESOURCES = {
    "memory_per_rank": Param((str, int), "2GiB", check=_size_check, doc="memory budget per rank"),
    "spill_dir": Param(str, "", doc="where to spill; empty = inside the output's temporary folder"),
    "device": Param(str, "auto", choices=("auto", "cpu", "gpu"),
                    doc="auto: a GPU where CuPy imports and a device answers, else the CPU"),
}

TOP = {
    "seed": Param(int, 0, check=seed_check, doc="seed of all randomness"),
    "input": Param(dict, nested=True, doc="[input]"),
    "layout": Param(dict, {}, nested=True, doc="[layout]"),
    "standardize": Param(list, [], nested=True,
                         doc="[[standardize]] layers: validated tables {steps, rejects}"),
    "sample": Param(list, [{"op": "shuffle"}], nested=True,
                    doc="[[sample]] layers: validated tables {op, ...} of the sampling modes"),
    "output": Param(dict, {}, nested=True, doc="[output]"),
    "resources": Param(dict, {}, nested=True, doc="[resources]"),
    "plan": Param(dict, {}, nested=True, doc="[plan]"),
}

#: Further top-level tables, validated by other modules: name -> "module:function(table) -> dict".
EXTRA_SECTIONS: dict[str, str] = {"train": "hpcprep.train.spec:validate_config"}
_TOP_SPEC = {**TOP, **{name: Param(dict, {}, nested=True, doc=f"[{name}]: as its validator returns it "
                                   f"({ref}), {{}} when absent")
                       for name, ref in EXTRA_SECTIONS.items()}}

InputConfig = section_class("InputConfig", INPUT, __name__,
                            "The ``[input]`` table: what is read and how (docs/config.md).")
LayoutConfig = section_class("LayoutConfig", LAYOUT, __name__,
                             "The ``[layout]`` table: fused, or the rank counts of the layers.")
OutputConfig = section_class("OutputConfig", OUTPUT, __name__, "The ``[output]`` table.")
ResourcesConfig = section_class(
    "ResourcesConfig", RESOURCES, __name__, "The ``[resources]`` table.",
    extra=[("memory_bytes", int, "``memory_per_rank`` in bytes (:func:`parse_size`)")])

#: The section tables of the run config: key -> (spec, class), in the order they are validated.
SECTIONS = {"input": (INPUT, InputConfig), "layout": (LAYOUT, LayoutConfig),
            "output": (OUTPUT, OutputConfig), "resources": (RESOURCES, ResourcesConfig),
            "plan": (PLAN, PlanConfig)}

RunConfig = section_class(
    "RunConfig", _TOP_SPEC, __name__,
    "The validated run config (:func:`parse_config`), the same on every rank.\n\n"
    "Fields are named as the TOML keys (docs/config.md); each section is a frozen\n"
    "dataclass of its own. The ``[[standardize]]`` and ``[[sample]]`` tables stay\n"
    "validated dicts, every default filled in: each step table (``standardize[i].steps``)\n"
    "and each sampling mode has its own Param spec and is handed as a dict to\n"
    "``steps.make_step`` / the sampling modes. Sections of ``EXTRA_SECTIONS``\n"
    "(``[train]``) stay the dicts their validators return.",
    types={name: cls for name, (_, cls) in SECTIONS.items()},
    extra=[("text", str, "the effective config as given (the TOML, then the --set overrides)"),
           ("world_size", int, "number of ranks the config was checked for")])


def _section_validator(ref: str):
    import importlib

    module, func = ref.split(":")
    return getattr(importlib.import_module(module), func)


def parse_override(text: str) -> tuple[list[str], object]:
    """Parse ``key=value`` from ``--set``: a dotted key and a TOML value (or a bare string)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. layout.fused=false")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", key):
        raise ConfigError(f"--set {text!r}: bad key {key!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of ``raw`` with ``--set`` overrides applied."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {text!r}: {part!r} is not an index of the list")
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"--set {text!r}: {part} is not a table or a list")
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"--set {text!r}: {last!r} is not an index of the list")
            node[int(last)] = value
        else:
            node[last] = value
    return raw


def load_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None


def parse_config(text: str, source: str, overrides=(), world_size: int = 1,
                 base_dir=None) -> RunConfig:
    """Parse and validate a config text: every check, the layout's included.

    Parameters
    ----------
    text : str
        TOML text.
    source : str
        Where it came from (for messages).
    overrides : list of str
        ``key=value`` strings from ``--set``.
    world_size : int
        Number of ranks; the layout must fit it.
    base_dir : path, optional
        Relative input and output paths are resolved against it (default: cwd).

    Returns
    -------
    RunConfig
        The validated config with every default filled in.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    raw = apply_overrides(raw, list(overrides))
    top = validate_table(raw, _TOP_SPEC, "")
    tables = {name: validate_table(top[name], spec, name) for name, (spec, _) in SECTIONS.items()}
    tables["resources"]["memory_bytes"] = parse_size(tables["resources"]["memory_per_rank"])
    top.update({name: cls(**tables[name]) for name, (_, cls) in SECTIONS.items()})
    for name, ref in EXTRA_SECTIONS.items():
        if top[name] or name in raw:
            top[name] = _section_validator(ref)(top[name])
    _check_input(top["input"])
    top["standardize"] = [_check_standardize(t, i) for i, t in enumerate(top["standardize"])]
    top["sample"] = [_check_sample(t, i) for i, t in enumerate(top["sample"])]
    if not top["sample"]:
        raise ConfigError("sample: at least one [[sample]] layer is needed (e.g. op = \"shuffle\")")
    given = text if not overrides else text + "\n# --set " + " --set ".join(overrides) + "\n"
    cfg = RunConfig(**top, text=given, world_size=world_size)
    _check_layout(cfg, world_size)
    return _resolve_paths(cfg, Path(base_dir) if base_dir else Path.cwd())


def _resolve_paths(cfg: RunConfig, base: Path) -> RunConfig:
    """``cfg`` with its input, output and spill paths resolved against ``base``."""
    spill = cfg.resources.spill_dir
    return replace(cfg, input=replace(cfg.input, paths=[str(base / p) for p in cfg.input.paths]),
                   output=replace(cfg.output, path=_output_path(base, cfg.output.path)),
                   resources=replace(cfg.resources, spill_dir=str(base / spill) if spill else ""))


def _output_path(base: Path, given: str) -> str:
    """``output.path`` resolved against ``base``: not empty, ``/``, the working folder or above."""
    from .output.location import output_path_problem

    if not given.strip():
        raise ConfigError('output.path: empty; name the output folder, e.g. output.path = "out"')
    path = str(base / given)
    problem = output_path_problem(path) or output_path_problem(path, base)
    if problem:
        raise ConfigError(f"output.path {given!r} {problem}; an overwrite would delete it: name "
                          f"an output folder of its own, e.g. output.path = \"out\"")
    return path


def _check_input(inp: InputConfig):
    if not inp.paths:
        raise ConfigError("input.paths: give at least one file or glob")
    if isinstance(inp.features, list):
        bad = list_of(str)(inp.features)
        if bad or not inp.features:
            raise ConfigError("input.features: a dataset name, or a non-empty list of column names")
    from .io.datetimes import check_config

    check_config(inp)


def _check_standardize(table, i):
    from .steps import make_step

    where = f"standardize[{i}]"
    t = validate_table(table, STANDARDIZE, where)
    for j, step in enumerate(t["steps"]):
        make_step(step, f"{where}.steps[{j}]")  # validates; steps are rebuilt per run
    return t


def _check_sample(table, i):
    from .sampling import check_mode

    return check_mode(table, f"sample[{i}]")


def _check_shard_sizes(sizes: list, n_writers: int) -> None:
    """``output.shard_sizes``: one non-negative size per writer (their sum is checked when the
    rows are known, :func:`hpcprep.stages.write.shard_targets`)."""
    if sizes and (len(sizes) != n_writers or min(sizes) < 0):
        raise ConfigError(f"output.shard_sizes = {sizes}: needs {n_writers} non-negative sizes "
                          f"(one per rank of the last sampling layer)")


def _check_layout(cfg: RunConfig, world_size: int):
    lay = cfg.layout
    n_std, n_smp = len(cfg.standardize), len(cfg.sample)
    if lay.fused:
        if lay.input or lay.standardize or lay.sample:
            raise ConfigError("layout: input/standardize/sample rank counts apply only with "
                              "layout.fused = false")
        check_plan(cfg, world_size, world_size, world_size, world_size)
        _check_shard_sizes(cfg.output.shard_sizes, world_size)
        return
    if lay.input < 1:
        raise ConfigError("layout.input: with layout.fused = false give the number of input ranks (>= 1)")
    if len(lay.standardize) != n_std:
        raise ConfigError(f"layout.standardize = {lay.standardize}: needs one rank count per "
                          f"[[standardize]] table ({n_std})")
    if len(lay.sample) != n_smp:
        raise ConfigError(f"layout.sample = {lay.sample}: needs one rank count per [[sample]] "
                          f"table ({n_smp})")
    for i, n in enumerate(lay.standardize):
        if n != lay.input:
            raise ConfigError(f"layout.standardize[{i}] = {n}: standardization layers are connected "
                              f"one by one to the input layer, so each needs layout.input = "
                              f"{lay.input} ranks")
    for i, n in enumerate(lay.sample):
        if n < 1:
            raise ConfigError(f"layout.sample[{i}] = {n}: must be >= 1")
    total = lay.input + sum(lay.standardize) + sum(lay.sample)
    check_plan(cfg, lay.input, lay.sample[-1] if lay.sample else 0, total, world_size)
    _check_shard_sizes(cfg.output.shard_sizes, lay.sample[-1])
    if total != world_size:
        raise ConfigError(f"layout: input + standardize + sample = {total} ranks, but the job has "
                          f"{world_size} (mpiexec -n {total}, or use layout.fused = true)")
