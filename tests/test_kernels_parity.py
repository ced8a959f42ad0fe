"""NumPy vs CuPy parity of every kernel twin (needs CuPy and a GPU; skipped otherwise).

Each test body is written once against an array module ``xp`` and decorated
with :func:`numpy_cupy`, which runs it with ``numpy`` and with ``cupy`` on the
same host-generated inputs and compares the results: integers and booleans
exactly, floats bit for bit unless the kernel documents an ulp or relative
tolerance (only the moments, whose sums are reduced in another order).
"""

import functools
import inspect
import zlib

import numpy as np
import pytest

cupy = pytest.importorskip(
    "cupy", reason="CuPy is not installed: NumPy/CuPy parity tests need CuPy and a GPU")


def _gpu_count():
    try:
        return int(cupy.cuda.runtime.getDeviceCount()), ""
    except Exception as e:  # noqa: BLE001 - CUDARuntimeError when no driver/device
        return 0, f"{type(e).__name__}: {e}"


_N_GPUS, _WHY = _gpu_count()
if _N_GPUS == 0:
    pytest.skip(f"no CUDA device: NumPy/CuPy parity tests need a GPU ({_WHY or '0 devices'})",
                allow_module_level=True)

from hpcprep.device import select_device  # noqa: E402
from hpcprep.kernels import (HOST, Kernels, aes_keys, det_log, destination_order,  # noqa: E402
                             gather_rows, key_order, keyed_hash, moments_of, multiply_add,
                             pack_rows, poisson1_multiplicity, random_keys, repeat_indices,
                             row_hash, scale_clip)
from hpcprep.layers.sample import record_dtype  # noqa: E402

SIZES = [0, 1, 1000, 100_003]


def _host(v):
    if isinstance(v, cupy.ndarray):
        return cupy.asnumpy(v)
    return v


def _compare(a, b, rtol, path="result"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _compare(a[k], b[k], rtol, f"{path}[{k!r}]")
        return
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _compare(x, y, rtol, f"{path}[{i}]")
        return
    if hasattr(a, "__dataclass_fields__") and not isinstance(a, np.ndarray):
        for k in a.__dataclass_fields__:
            _compare(getattr(a, k), getattr(b, k), rtol, f"{path}.{k}")
        return
    if a is None or isinstance(a, (int, str, np.dtype)):
        assert a == b, f"{path}: {a!r} != {b!r}"
        return
    a, b = np.asarray(_host(a)), np.asarray(_host(b))
    assert a.dtype == b.dtype and a.shape == b.shape, (path, a.dtype, b.dtype, a.shape, b.shape)
    if a.dtype.kind == "f" and rtol:
        np.testing.assert_allclose(b, a, rtol=rtol, atol=0, equal_nan=True, err_msg=path)
    elif a.dtype.kind == "f":
        # bit for bit, NaN payloads aside
        same = (a.view(f"u{a.itemsize}") == b.view(f"u{b.itemsize}")) | (np.isnan(a) & np.isnan(b))
        assert same.all(), f"{path}: {(~same).sum()} of {a.size} values differ"
    else:
        np.testing.assert_array_equal(b, a, err_msg=path)


def numpy_cupy(rtol=0.0):
    """Run ``f(xp, ...)`` with NumPy and CuPy and compare (CuPy's ``numpy_cupy_*`` style)."""
    def deco(f):
        sig = inspect.signature(f)
        params = [p for name, p in sig.parameters.items() if name != "xp"]

        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            ref = f(np, *args, **kwargs)
            got = f(cupy, *args, **kwargs)
            cupy.cuda.get_current_stream().synchronize()
            _compare(ref, got, rtol)

        wrapper.__signature__ = sig.replace(parameters=params)
        return wrapper
    return deco


def rng_for(*args):
    """A generator seeded by the test's parameters (stable across processes)."""
    return np.random.default_rng(zlib.crc32(repr(args).encode()))


def keys_np(n, seed=11):
    return random_keys(seed, 3, np.arange(n, dtype=np.int64))


# ------------------------------------------------------------------- keys
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint64, np.uint32])
@numpy_cupy()
def test_keyed_hash(xp, n, dtype):
    ids = (np.arange(n) - n // 3).astype(dtype)
    return keyed_hash(123, 4, xp.asarray(ids))


@pytest.mark.parametrize("n", SIZES)
def test_keyed_hash_kernel_equals_generic_cupy(n):
    ids = cupy.arange(n, dtype=cupy.int64) - 7
    _compare(random_keys(9, 1, ids), keyed_hash(9, 1, ids), 0)


# ---------------------------------------------------------------- packing
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("n_parts", [1, 3, 8])
@numpy_cupy()
def test_destination_order(xp, n, n_parts):
    dest = rng_for(n, n_parts).integers(0, n_parts, n)
    return destination_order(xp.asarray(dest), n_parts)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("fdtype", [np.float32, np.float64])
@pytest.mark.parametrize("ordered", [False, True])
@numpy_cupy()
def test_pack_rows(xp, n, fdtype, ordered):
    """The same record bytes (NumPy: a structured array, viewed as bytes; CuPy: a uint8 matrix)."""
    rng = rng_for(n, np.dtype(fdtype).str, ordered)
    dt = record_dtype(3, fdtype, "int8", weights=True, copies=True)
    cols = [("id", np.arange(n, dtype=np.int64)), ("x", rng.normal(size=(n, 3)) * 100),
            ("y", rng.integers(0, 5, n)), ("w", rng.random(n))]
    order = rng.permutation(n) if ordered else None
    rec = pack_rows([(k, xp.asarray(v)) for k, v in cols], dt,
                    None if order is None else xp.asarray(order))
    return rec if xp is cupy else rec.view(np.uint8).reshape(n, dt.itemsize)


@pytest.mark.parametrize("n", SIZES)
@numpy_cupy()
def test_gather_rows(xp, n):
    rng = rng_for(n)
    x = rng.normal(size=(n, 4))
    idx = rng.integers(0, max(n, 1), 2 * n) if n else np.zeros(0, np.int64)
    return gather_rows(xp.asarray(x), xp.asarray(idx))


# ---------------------------------------------------------------- moments
@pytest.mark.parametrize("n", [1, 1000, 100_003])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nan", [False, True])
@numpy_cupy(rtol=1e-12)   # sums reduce in another order on the GPU: a few ulps, not bits
def test_moments_of(xp, n, dtype, nan):
    """``n`` rows reach the NumPy twin's blocked sums at 100,003 rows (blocks of 26,214 at d = 5)."""
    x = (rng_for(n, nan).normal(size=(n, 5)) * 3 + 7).astype(dtype)
    if nan:
        x[::3, 2] = np.nan
    return moments_of(xp.asarray(x))


# -------------------------------------------------------------- transform
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("bounds", [(None, None), (-2.0, 2.0), (None, 0.5)])
@pytest.mark.parametrize("out", [np.float32, np.float64])
@numpy_cupy()
def test_scale_clip(xp, n, dtype, bounds, out):
    rng = rng_for(n, np.dtype(dtype).str)
    x = (rng.normal(size=(n, 4)) * 1000).astype(dtype)
    if n and np.dtype(dtype).kind == "f":
        x[0, 1] = np.nan
    mean, scale = rng.normal(size=4), rng.random(4) * 300 + 0.1
    return (scale_clip(xp.asarray(x), mean, scale, lo=bounds[0], hi=bounds[1], dtype=out),
            scale_clip(xp.asarray(x), lo=bounds[0], hi=bounds[1], dtype=out),   # the outliers' clip
            multiply_add(xp.asarray(x), scale, mean, dtype=out))                # minmax scaling


# --------------------------------------------------------------- row hash
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int16, np.uint8, np.bool_])
@pytest.mark.parametrize("d", [1, 3, 5])
@numpy_cupy()
def test_row_hash(xp, n, dtype, d):
    rng = rng_for(n, np.dtype(dtype).str, d)
    x = (rng.normal(size=(n, d)) * 20).astype(dtype)
    if n > 4 and np.dtype(dtype).kind == "f":
        x[1, 0], x[2, 0], x[3, 0] = -0.0, np.nan, -np.nan
        x[4] = x[0]
    xd = xp.asarray(x)
    state = row_hash(xd, seed=5)
    return (row_hash(xd), row_hash(xd, canonical=False), row_hash(xd[:, 0], seed=row_hash(xd, seed=5)),
            row_hash(xd[:, 0], seed=state, out=state))    # dedup's chaining, in place


# -------------------------------------------------------------- selection
@pytest.mark.parametrize("n", SIZES)
@numpy_cupy()
def test_key_order(xp, n):
    return key_order(xp.asarray(keys_np(n)))     # distinct keys: one order


@pytest.mark.parametrize("n", SIZES)
def test_run_kernels_on_the_gpu_equal_the_host(n):
    """What a GPU rank's layers call (host in, host out) gives the host's integers."""
    ids = np.arange(n, dtype=np.int64) * 3 - 11
    gpu = Kernels(cupy)
    assert gpu.on_gpu and not HOST.on_gpu
    keys = gpu.keys(4, 7, ids)
    assert isinstance(keys, np.ndarray)
    np.testing.assert_array_equal(keys, HOST.keys(4, 7, ids))
    np.testing.assert_array_equal(gpu.order(keys), HOST.order(keys))


@pytest.mark.parametrize("n", SIZES)
@numpy_cupy()
def test_det_log_and_aes_keys(xp, n):
    w = rng_for(n).random(n) * 10
    w[: n // 10] = 0.0
    u = rng_for(n, "u").random(n) + 1e-300
    return det_log(xp.asarray(u)), aes_keys(xp.asarray(keys_np(n)), xp.asarray(w))


@pytest.mark.parametrize("n", SIZES)
@numpy_cupy()
def test_poisson_and_repeat(xp, n):
    m = poisson1_multiplicity(xp.asarray(keys_np(n)))
    return m, repeat_indices(m)


def test_select_device_binds_a_gpu():
    from mpi4py import MPI
    info = select_device(MPI.COMM_WORLD, "gpu")
    assert info.kind == "gpu" and info.xp is cupy
    assert info.device_id == info.local_rank % _N_GPUS
    assert cupy.cuda.Device().id == info.device_id
    assert info.report()["cuda_aware_mpi"] in (True, False)
