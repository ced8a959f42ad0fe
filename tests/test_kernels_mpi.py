"""Multi-rank tests of the device-buffer MPI helpers and collective kernels (under mpiexec)."""

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
    from hpcprep.kernels import global_kth_key, keyed_hash, pack_by_destination, unpack_columns
    from hpcprep.kernels.mpi_buffers import exchange_rows
    from hpcprep.kernels.route import key_range_owner

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    N = 10_007
    lo, hi = rank * N // size, (rank + 1) * N // size
    ids = np.arange(lo, hi, dtype=np.int64)
    keys = keyed_hash(5, 2, ids)
    feats = np.stack([ids * 0.5, -ids * 1.0], axis=1).astype(np.float32)
    p = pack_by_destination({"ids": ids, "keys": keys, "features": feats},
                            key_range_owner(keys, size), size)
    recv, rcounts = exchange_rows(comm, p.buf, p.counts)
    got = unpack_columns(recv, p.dtype)

    all_ids = np.arange(N, dtype=np.int64)
    all_keys = keyed_hash(5, 2, all_ids)
    mine = all_ids[key_range_owner(all_keys, size) == rank]
    assert np.array_equal(got["ids"], mine), (rank, got["ids"][:5], mine[:5])
    assert np.array_equal(got["keys"], all_keys[mine])
    assert np.array_equal(got["features"][:, 1], -mine.astype(np.float32))
    assert int(rcounts.sum()) == len(mine)

    for k in (1, 17, N - 1, N):
        t = global_kth_key(comm, keys, k)
        assert t == int(np.sort(all_keys)[k - 1]), (k, t)
        assert comm.allreduce(int((keys <= np.uint64(t)).sum())) == k
    assert global_kth_key(comm, keys, N + 1) is None

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
def test_exchange_and_selection_under_mpiexec(tmp_path, n):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, "-m", "mpi4py", str(script)],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(f"OK {i}" for i in range(n))
