"""Multi-rank tests of the records exchange, the rounds loop and collective kernels (under mpiexec)."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from mpi4py import MPI
    from hpcprep.device import probe_gpu, select_device
    from hpcprep.errors import HpcprepError
    from hpcprep.kernels import global_kth_key, keyed_hash
    from hpcprep.kernels.route import key_range_owner
    from hpcprep.mpi.exchange import Exchanger, rounds

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    N = 10_007
    lo, hi = rank * N // size, (rank + 1) * N // size
    ids = np.arange(lo, hi, dtype=np.int64)
    keys = keyed_hash(5, 2, ids)
    feats = np.stack([ids * 0.5, -ids * 1.0], axis=1).astype(np.float32)
    dt = np.dtype([("ids", "<i8"), ("keys", "<u8"), ("features", "<f4", (2,))])
    owner = key_range_owner(keys, size)
    order = np.argsort(owner, kind="stable")
    rec = np.empty(len(ids), dt)
    rec["ids"], rec["keys"], rec["features"] = ids[order], keys[order], feats[order]
    counts = np.bincount(owner, minlength=size)

    all_ids = np.arange(N, dtype=np.int64)
    all_keys = keyed_hash(5, 2, all_ids)
    mine = all_ids[key_range_owner(all_keys, size) == rank]
    # one round, and many rounds of at most 100 rows between two ranks
    for max_bytes in (1 << 30, 100 * dt.itemsize):
        with Exchanger(max_bytes) as ex:
            got, rcounts, sent = ex.records(comm, rec, counts, dt)
        assert np.array_equal(got["ids"], mine), (rank, got["ids"][:5], mine[:5])
        assert np.array_equal(got["keys"], all_keys[mine])
        assert np.array_equal(got["features"][:, 1], -mine.astype(np.float32))
        assert rcounts.tolist() == comm.alltoall(counts.tolist())
        assert sent == (len(rec) - counts[rank]) * dt.itemsize
    # skip_self: this rank's own section stays out of what it receives
    with Exchanger() as ex:
        got, rcounts, _ = ex.records(comm, rec, counts, dt, skip_self=True)
    assert rcounts[rank] == 0 and len(got) == len(mine) - counts[rank]

    # every rank takes part in max(items) rounds; one that ran out gets the empty item
    seen = list(rounds(comm, range(1, rank + 2), 0))
    assert seen == list(range(1, rank + 2)) + [0] * (size - 1 - rank), seen

    blocks = lambda: [keys[i:i + 1000] for i in range(0, len(keys), 1000)]
    for k in (1, 17, N // 2, N - 1, N):
        t = global_kth_key(comm, blocks, k)
        assert t == int(np.sort(all_keys)[k - 1]), (k, t)
        assert comm.allreduce(int((keys <= np.uint64(t)).sum())) == k
    assert global_kth_key(comm, blocks, N + 1) is None
    # keys crowded into one bin of the top bits: the second pass still finds the k-th exactly
    crowded = lambda: [np.uint64(7 << 48) + ids.astype(np.uint64)]
    assert global_kth_key(comm, crowded, 5000) == (7 << 48) + 4999

    info = select_device(comm, "auto")
    assert info.report()["rank"] == rank
    if not probe_gpu(info.local_rank)["ok"]:
        try:
            select_device(comm, "gpu")
        except HpcprepError as e:
            assert all(f"rank {r} " in str(e) for r in range(size)), str(e)
        else:
            raise AssertionError("gpu without one did not raise")
    sys.stdout.write(f"OK {rank}\\n")
    sys.stdout.flush()
""")


@pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found")
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_exchange_rounds_and_selection_under_mpiexec(tmp_path, n):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, "-m", "mpi4py", str(script)],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(f"OK {i}" for i in range(n))


def test_recycled_receive_buffer_is_reused_and_only_then():
    """The next exchange receives into a buffer given back, never into one still lent."""
    import numpy as np
    from mpi4py import MPI

    from hpcprep.mpi.exchange import SPARE_MIN_BYTES, Exchanger

    dt = np.dtype([("id", "<i8")])
    rec = np.zeros(SPARE_MIN_BYTES // dt.itemsize, dt)
    rec["id"] = np.arange(len(rec))
    with Exchanger() as ex:
        first, _, _ = ex.records(MPI.COMM_SELF, rec, [len(rec)], dt)
        second, _, _ = ex.records(MPI.COMM_SELF, rec, [len(rec)], dt)
        assert not np.shares_memory(first, second)     # ``first`` was not given back
        ex.recycle(second)
        third, _, _ = ex.records(MPI.COMM_SELF, rec[::-1].copy(), [len(rec)], dt)
        assert np.shares_memory(second, third)
        assert np.array_equal(first["id"], rec["id"])  # untouched by later exchanges
        assert np.array_equal(third["id"], rec["id"][::-1])
