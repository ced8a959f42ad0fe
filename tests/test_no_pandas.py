"""A run converts Arrow data without Arrow's pandas support: no rank imports pandas.

Arrow's own conversions (``to_numpy``, ``pa.array(ndarray)``, scalars from Python
values) import pandas when it is installed, about 0.45 s per process
(hpcprep.io.arrow_buffers). The run is checked in a fresh interpreter: the test
process itself has pandas loaded.
"""

import datetime
import json
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

N = 3000

CHECK = textwrap.dedent("""
    import sys
    from hpcprep.cli import main
    try:
        main(["run", sys.argv[1], "--quiet"])
    except SystemExit as e:
        assert not e.code, e.code
    loaded = sorted(m for m in sys.modules if m == "pandas" or m.startswith("pandas."))
    print("PANDAS" if loaded else "NO-PANDAS")
""")


def _write_inputs(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=N)
    x[::7] = np.nan
    stamps = [datetime.datetime(2024, 1, 1) + datetime.timedelta(minutes=37 * i) for i in range(N)]
    pq.write_table(pa.table({"f0": pa.array(x, from_pandas=True), "f1": rng.normal(size=N).astype(np.float32),
                             "c": pa.array([["a", "b", None][i % 3] for i in range(N)]),
                             "t": pa.array(stamps), "y": rng.integers(0, 3, N)}),
                   tmp_path / "d.parquet", row_group_size=700)
    lines = ["f0,f1,t,c,y"]
    for i in range(N):
        f0 = "" if i % 7 == 0 else ("junk" if i % 11 == 0 else repr(float(x[i])))
        t = "2024-02-30" if i % 13 == 0 else stamps[i].isoformat() + ("+02:00" if i % 2 else "")
        lines.append(f"{f0},{i * 0.5},{t},{'abc'[i % 3]},{i % 3}")
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    with open(tmp_path / "d.jsonl", "w") as f:
        for i in range(N):
            f.write(json.dumps({"f0": None if i % 7 == 0 else float(x[i]), "f1": i * 0.5,
                                "c": "abc"[i % 3], "y": i % 3}) + "\n")


@pytest.mark.parametrize("name,dates", [("d.parquet", True), ("d.csv", True), ("d.jsonl", False)])
def test_a_run_does_not_import_pandas(tmp_path, name, dates):
    _write_inputs(tmp_path)
    datetime_key = 'datetime = {t = ["epoch", "hour", "weekday"]}\n' if dates else ""
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""seed = 1
[input]
paths = ["{tmp_path / name}"]
features = ["f0", "f1"]
label = "y"
categorical = ["c"]
{datetime_key}
[[standardize]]
steps = [{{ op = "dropna" }}, {{ op = "scale" }}, {{ op = "categorical", columns = ["c"] }}]
[[sample]]
op = "shuffle"
[output]
path = "{tmp_path / 'out'}"
""")
    got = subprocess.run([sys.executable, "-c", CHECK, str(cfg)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert got.returncode == 0, got.stderr[-3000:]
    assert got.stdout.strip().splitlines()[-1] == "NO-PANDAS"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert 0 < report["rows_out"] < N     # rows were dropped (missing, junk, bad dates), the rest kept
