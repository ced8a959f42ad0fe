"""Property test of the CSV input path on mutated real-looking files (issue 12).

Each example inserts, deletes or replaces bytes of a small CSV file (quotes,
delimiters, newlines, NUL, invalid UTF-8, huge numbers, random bytes) and runs
the real reader path in-process: plan (header, column probe, byte ranges),
collective count (on ``COMM_SELF``) and chunk reads. The only outcomes allowed
are a clean hpcprep error naming the file, or success with every counted record
either kept or dropped and counted. The outcome must not depend on how the file
is cut into chunks. Bounded and derandomized, so CI stays fast and stable.
"""

import os
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpi4py import MPI

from hpcprep.config import INPUT, InputConfig
from hpcprep.errors import HpcprepError
from hpcprep.io.plan import build_input_plan
from hpcprep.io.plan_count import count_csv_chunks
from hpcprep.io.readers import ChunkReader
from hpcprep.schema import validate_table

BASE = (b"id,x,y,cat,label\n"
        b"1,0.5,-2.25,red,0\n"
        b"2,1e3,NA,\"blue, dark\",1\n"
        b"3,.75,4,,0\r\n"
        b"4,-0.0,5e-3,\"say \"\"hi\"\"\",1\n"
        b"\n"
        b"5,7,8,green,0\n"
        b"6,  9 ,1_000,red,1\n"
        b"7,nan,inf,caf\xc3\xa9,0\n"
        b"8,3,2,red,1")

TOKENS = [b'"', b",", b"\n", b"\r", b"\r\n", b"\x00", b"\xff", b"\xc3", b"1e400", b"-1e400",
          b"9" * 400, b'""', b'"x,y"', b"NA", b" ", b"\n\n", b"a,b,c,d,e,f", b"\xef\xbb\xbf"]

#: (operation, anywhere (else after the header line), position, bytes)
MUTATION = st.tuples(st.sampled_from(["insert", "delete", "replace"]),
                     st.sampled_from([False] * 7 + [True]),
                     st.integers(0, 1 << 16),
                     st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=3)))
HEADER_END = BASE.index(b"\n") + 1


def mutate(data: bytes, ops) -> bytes:
    for op, anywhere, pos, token in ops:
        lo = 0 if anywhere else min(HEADER_END, len(data))
        at = lo + pos % (len(data) - lo + 1)
        if op == "insert":
            data = data[:at] + token + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + len(token):]
        else:
            data = data[:at] + token + data[at + len(token):]
    return data


def inp(path, chunk_rows: int, on_bad_row: str) -> InputConfig:
    """The validated ``[input]`` table (every default filled in, as a run sees it)."""
    return InputConfig(**validate_table({"paths": [path], "format": "csv", "features": ["x", "y"],
                           "label": "label", "categorical": ["cat"], "on_bad_row": on_bad_row,
                           "chunk_rows": chunk_rows}, INPUT, "input"))


def read_everything(path, chunk_rows: int, on_bad_row: str):
    """("error", message) or ("ok", ids, features, labels, cats, dropped counts, counted)."""
    table = inp(path, chunk_rows, on_bad_row)
    try:
        plan = build_input_plan(table, 1)
        count_csv_chunks(plan, MPI.COMM_SELF, [0], table)
        reader = ChunkReader(table, plan.feature_dtype, plan.label_dtype)
        chunks = [reader.read(d) for d in plan.chunks_of(0)]
    except HpcprepError as e:
        msg = str(e)
        assert "\n" not in msg and os.path.basename(path) in msg, msg
        return ("error", msg)
    kept = sum(len(c) for c in chunks)
    dropped = {}
    for c in chunks:
        for reason, n in c.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
    assert kept + sum(dropped.values()) == plan.total_rows   # every record accounted for
    ids = np.concatenate([c.ids for c in chunks]) if chunks else np.empty(0, np.int64)
    assert np.all(np.diff(ids) > 0) and (ids.size == 0 or ids[-1] < plan.total_rows)
    cat = lambda f: np.concatenate([f(c) for c in chunks]) if chunks else np.empty(0)  # noqa: E731
    first_bad = min((r["line"] for recs in reader.bad_samples.values() for r in recs), default=None)
    return ("ok", ids, cat(lambda c: c.features), cat(lambda c: c.labels),
            cat(lambda c: c.extras["cat:cat"]).astype(str).tolist(), dropped, plan.total_rows,
            first_bad)


def same(a, b) -> bool:
    if a[0] != b[0] or a[0] == "error":
        return a == b
    return (np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2], equal_nan=True)
            and np.array_equal(a[3], b[3], equal_nan=True) and a[4:] == b[4:])


_DIR = tempfile.mkdtemp(prefix="hpcprep-fuzz-")


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(MUTATION, min_size=1, max_size=6))
def test_mutated_csv_gives_a_clean_error_or_every_record_accounted_for(ops):
    path = os.path.join(_DIR, "fuzz.csv")
    with open(path, "wb") as f:
        f.write(mutate(BASE, ops))
    outcome = {}
    for mode in ("drop", "error"):
        outcome[mode] = read_everything(path, 1 << 20, mode)
        small_chunks = read_everything(path, 2, mode)
        assert same(outcome[mode], small_chunks), (mode, outcome[mode], small_chunks)
    drop, error = outcome["drop"], outcome["error"]
    if drop[0] == "ok":   # on_bad_row = "error" stops at the first record "drop" drops, or reads the same
        if drop[7] is None:
            assert same(drop, error)
        else:
            assert error[0] == "error" and f", line {drop[7]}: " in error[1], (drop, error)


def test_unmutated_file_reads_cleanly():
    path = os.path.join(_DIR, "base.csv")
    with open(path, "wb") as f:
        f.write(BASE)
    out = read_everything(path, 3, "error")
    assert out[0] == "ok" and len(out[1]) == 8 and out[5] == {} and out[7] is None
