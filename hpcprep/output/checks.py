"""What must hold before an output is committed (DESIGN §6): few enough dropped rows, and
no non-finite features unless ``output.nonfinite`` allows them."""

import numpy as np

from ..config import OutputConfig


def sum_drops(reports) -> dict:
    """Rows dropped per step label (``"input"``: the reader) and reason, summed over ``reports``."""
    counts = {}
    for rep in reports:
        for reason, n in rep.get("input", {}).get("dropped", {}).items():
            bucket = counts.setdefault("input", {})
            bucket[reason] = bucket.get(reason, 0) + n
        for layer in rep["standardize"].values():
            for label, reasons in layer["dropped"].items():
                bucket = counts.setdefault(label, {})
                for reason, n in reasons.items():
                    bucket[reason] = bucket.get(reason, 0) + n
    return counts


def nonfinite_of(shard, names, split_names) -> list:
    """This rank's shards that hold NaN or ±inf features: ``(order, path, nan, inf)`` each.

    ``order`` sorts shards into the dataset's order (split, then first row);
    ``nan`` and ``inf`` map feature names to counts (non-zero ones only).
    """
    if shard is None:
        return []
    parts = ([(i, name + "/", shard["splits"][name]) for i, name in enumerate(split_names)]
             if split_names else [(0, "", shard)])
    out = []
    for i, prefix, s in parts:
        if s["nan_count"].any() or s["inf_count"].any():
            counts = [{names[j]: int(c[j]) for j in np.flatnonzero(c)}
                      for c in (s["nan_count"], s["inf_count"])]
            out.append(((i, s["start"]), prefix + s["path"], *counts))
    return out


def _step_name(label: str) -> str:
    """``"0.3.scale"`` -> ``"standardize[0].steps[3] scale"``; ``"input"`` -> the reader."""
    if label == "input":
        return "the reader (input)"
    layer, step, op = label.split(".", 2)
    return f"standardize[{layer}].steps[{step}] {op}"


def output_problem(output: OutputConfig, rows_in: int, drops: dict, nonfinite: list) -> str | None:
    """Why the output must not be committed, or None (a pure function of the gathered numbers).

    Parameters
    ----------
    output : OutputConfig
        The ``[output]`` table (``max_drop_fraction``, ``nonfinite``).
    rows_in : int
        Input rows.
    drops : dict
        Rows dropped per step label and reason (:func:`sum_drops`).
    nonfinite : list
        Shards with NaN or ±inf features (:func:`nonfinite_of`), from every rank.
    """
    limit = output.max_drop_fraction
    dropped = sum(n for reasons in drops.values() for n in reasons.values())
    if limit < 1.0 and rows_in > 0 and dropped > limit * rows_in:
        label, reason, n = max(((lb, r, n) for lb, rs in drops.items() for r, n in rs.items()),
                               key=lambda t: t[2])  # the first of equals: the same on every rank
        return (f"{dropped:,} of {rows_in:,} input rows ({dropped / rows_in:.1%}) were dropped, "
                f"more than output.max_drop_fraction = {limit:g}; most by {_step_name(label)}: "
                f"{reason!r} ({n:,} rows). Check the data and the config, or raise "
                f"output.max_drop_fraction (1.0 turns the check off)")
    policy = output.nonfinite
    if policy == "any":
        return None
    what = "±inf" if policy == "nan" else "NaN or ±inf"
    bad = []
    for order, path, nan, inf in sorted(nonfinite, key=lambda t: t[0]):
        per = dict(inf)
        if policy == "none":
            for k, v in nan.items():
                per[k] = per.get(k, 0) + v
        if per:
            bad.append((path, per))
    if not bad:
        return None
    path, per = bad[0]
    cols = ", ".join(f"{k!r} ({v:,})" for k, v in per.items())
    more = (f"; {len(bad) - 1} more shard(s) hold some too" if len(bad) > 1 else "")
    allow = 'output.nonfinite = "any"' + (' (or "nan" for NaN only)' if policy == "none" else "")
    return (f"output.nonfinite = \"{policy}\": shard {path} would hold {sum(per.values()):,} "
            f"non-finite value(s) ({what}) in feature(s) {cols}{more}. Drop those rows "
            f"(op = \"dropna\") or fill them (op = \"impute\") in [[standardize]], or allow them "
            f"with {allow}")
