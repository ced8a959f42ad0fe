"""CuPy kernels of the GPU path, compiled lazily on first use.

Nothing here imports CuPy at module import: each getter imports it, builds the
kernel once (``functools.cache``) and returns it. CuPy then compiles the CUDA
source with NVRTC on the first launch and caches the binary on disk.

The kernels use only integer arithmetic, IEEE double ``+ - * /`` (correctly
rounded on the GPU as on the CPU; the one product followed by a sum is written
with ``__dmul_rn``/``__dadd_rn``, so no fused multiply-add can change a result)
and a double to float conversion (round to nearest even). Each therefore
computes bit for bit what its NumPy twin in the sibling modules computes.
"""

import functools

#: SplitMix64 finalizer as a CUDA device function (same constants as
#: :func:`hpcprep.kernels.hashing.splitmix64`).
SPLITMIX64_CUDA = r"""
__device__ __forceinline__ unsigned long long hpcprep_splitmix64(unsigned long long x) {
    unsigned long long z = x + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
"""

#: Body of the keyed hash: ``splitmix64(uint64(id) ^ base)``. A signed id is
#: converted to uint64 modulo 2**64, as NumPy's ``astype(uint64)`` does.
KEYED_HASH_BODY = "key = hpcprep_splitmix64(((unsigned long long) id) ^ base);"

#: Row hash: one thread per row mixes each 64-bit word with its position's key, sums the
#: mixed words (modulo 2**64) and folds the sum into the state (see :func:`~hpcprep.kernels.rowhash.row_hash`).
ROW_HASH_SOURCE = SPLITMIX64_CUDA + r"""
extern "C" __global__ void hpcprep_row_hash(
        const unsigned long long* __restrict__ words,
        const unsigned long long* __restrict__ keys,
        const unsigned long long* __restrict__ h0,
        unsigned long long* __restrict__ out,
        const long long n_rows, const long long n_words) {
    long long i = (long long) blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long) gridDim.x * blockDim.x;
    for (; i < n_rows; i += stride) {
        const unsigned long long* w = words + i * n_words;
        unsigned long long sum = 0;
        for (long long j = 0; j < n_words; ++j) {
            sum += hpcprep_splitmix64(w[j] ^ keys[j]);
        }
        out[i] = hpcprep_splitmix64(h0[i] ^ sum);
    }
}
"""

#: Fused ``(x - center) / scale``, optionally clipped, in double, then cast.
#: The comparisons (not fmin/fmax) keep NaN as NaN, as ``numpy.clip`` does.
SCALE_CLIP_BODY = r"""
double v = ((double) x - center) / scale;
if (clip) {
    v = (v < lo) ? lo : ((v > hi) ? hi : v);
}
y = (Y) v;
"""

#: ``x * scale + offset`` in double with the product and the sum rounded apart
#: (the ``_rn`` intrinsics are never contracted into an FMA), then cast.
MULTIPLY_ADD_BODY = "y = (Y) __dadd_rn(__dmul_rn((double) x, scale), offset);"


@functools.cache
def keyed_hash_kernel():
    """ElementwiseKernel ``(T id, uint64 base) -> uint64 key``."""
    import cupy

    return cupy.ElementwiseKernel(
        "T id, uint64 base", "uint64 key", KEYED_HASH_BODY,
        "hpcprep_keyed_hash", preamble=SPLITMIX64_CUDA)


@functools.cache
def row_hash_kernel():
    """RawKernel ``hpcprep_row_hash(words, keys, h0, out, n_rows, n_words)``."""
    import cupy

    return cupy.RawKernel(ROW_HASH_SOURCE, "hpcprep_row_hash")


@functools.cache
def scale_clip_kernel():
    """ElementwiseKernel ``(T x, float64 center, scale, lo, hi, bool clip) -> Y y``."""
    import cupy

    return cupy.ElementwiseKernel(
        "T x, float64 center, float64 scale, float64 lo, float64 hi, bool clip", "Y y",
        SCALE_CLIP_BODY, "hpcprep_scale_clip")


@functools.cache
def multiply_add_kernel():
    """ElementwiseKernel ``(T x, float64 scale, float64 offset) -> Y y``."""
    import cupy

    return cupy.ElementwiseKernel("T x, float64 scale, float64 offset", "Y y", MULTIPLY_ADD_BODY,
                                  "hpcprep_multiply_add")


def launch_1d(kernel, n: int, args, threads: int = 256):
    """Launch a grid-stride RawKernel over ``n`` items (no launch for ``n == 0``)."""
    if n == 0:
        return
    blocks = min((n + threads - 1) // threads, 65535)
    kernel((blocks,), (threads,), args)
