"""The decompressed stream reads the next piece ahead on a thread: same bytes, same errors."""

import bz2
import gzip
import threading

import numpy as np
import pytest

import hpcprep.io.compressed as compressed
from hpcprep.errors import DataError


def _text(n=20_000):
    rng = np.random.default_rng(5)
    return b"".join(b"%d,%f\n" % (i, v) for i, v in enumerate(rng.normal(size=n)))


def _reader_threads():
    return [t for t in threading.enumerate() if t.name.startswith("hpcprep-decompress")]


@pytest.mark.parametrize("codec", ["gz", "bz2"])
def test_reads_and_ranges_give_the_decompressed_bytes(tmp_path, codec):
    text = _text()
    path = tmp_path / f"t.csv.{codec}"
    path.write_bytes((gzip if codec == "gz" else bz2).compress(text))
    rng = np.random.default_rng(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compressed, "_READ", 4096)     # many pieces, each read ahead
        stream = compressed.Decompressed(str(path), compressed.compression_of(str(path)))
        at = 0
        while at < len(text):                      # reads of sizes that do not match the pieces
            n = int(rng.integers(1, 20_000))
            got = stream.read(n)
            assert got == text[at:at + n] and stream.pos == at + len(got)
            at += len(got)
        assert stream.read(10) == b""
        for start, stop in ((len(text) // 2, len(text) // 2 + 5000), (17, 9000), (0, 3),
                            (len(text) - 5, len(text))):   # back (reopened) and forward
            assert stream.range(start, stop) == text[start:stop]
        stream.close()
    assert _reader_threads() == []


def test_a_truncated_file_is_an_error_from_the_reading_thread(tmp_path):
    text = _text(200_000)
    data = gzip.compress(text)
    path = tmp_path / "t.csv.gz"
    path.write_bytes(data[:len(data) // 2])
    stream = compressed.Decompressed(str(path), "gzip")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compressed, "_READ", 1 << 16)
        with pytest.raises(DataError, match=r"t\.csv\.gz: corrupt or truncated gzip data after \d+ bytes"):
            while stream.read(1 << 16):
                pass
    assert 0 < stream.pos < len(text)
    stream.close()
    assert _reader_threads() == []
