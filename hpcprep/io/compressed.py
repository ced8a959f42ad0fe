"""Compressed CSV and JSON lines: decompressed streams, cut into chunks of lines.

Compressed files (``.gz``, ``.bz2``, ``.zst``, ``.xz``) cannot be split: one
input rank decompresses each file as a stream. While counting (see
:func:`hpcprep.io.plan_count.count_csv_chunks`) it cuts the decompressed text into
pieces of ``chunk_rows`` lines; the pieces become the file's chunks, with
offsets into the decompressed text, and a reader continues its open stream
from piece to piece (or reads the text kept while counting).
"""

from __future__ import annotations

import bz2
import lzma
import os
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .csv_split import _normalize, count_newlines, newline_counts

#: Compression of a file, by its last suffix.
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd", ".xz": "xz"}

_READ = 1 << 22   # bytes decompressed at a time


def compression_of(path: str) -> str:
    """``gzip``, ``bz2``, ``zstd``, ``xz`` from the suffix, or ``""`` (not compressed)."""
    return COMPRESSIONS.get(os.path.splitext(path)[1].lower(), "")


# --------------------------------------------------------------------------- streams

def open_stream(path: str, compression: str):
    """A binary file object of the decompressed content (``read(n)``, ``close()``)."""
    try:
        if compression == "xz":
            return lzma.open(path, "rb")
        if compression == "bz2":
            return bz2.open(path, "rb")
        import pyarrow as pa

        return pa.input_stream(path, compression=compression)
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e})") from None


class Decompressed:
    """A decompressed file read forward; reopened when asked to go back.

    The next piece of ``_READ`` bytes is decompressed on a background thread
    while the caller works on the current one (zlib, bz2, lzma and Arrow's
    streams release the GIL): decompression overlaps with counting, parsing
    and writing, as Arrow's own CSV reader overlaps them.

    Parameters
    ----------
    path, compression : str
        The file and its compression (:func:`compression_of`).
    """

    def __init__(self, path: str, compression: str):
        self.path, self.compression = path, compression
        self._f = None
        self._ahead = None       # the Future of the next piece
        self._pool = None
        self._left = b""         # the rest of a piece read past what was asked
        self.pos = 0

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes from the current position (fewer only at the end)."""
        parts, want = [], n
        while want > 0:
            piece = self._left or self._next_piece()
            if not piece:
                break
            piece, self._left = (piece[:want], piece[want:]) if len(piece) > want else (piece, b"")
            parts.append(piece)
            want -= len(piece)
            self.pos += len(piece)
        return b"".join(parts)

    def _next_piece(self) -> bytes:
        """The piece read ahead (or read now), and the read of the one after started."""
        if self._f is None:
            self._f = open_stream(self.path, self.compression)
        try:
            piece = self._ahead.result() if self._ahead is not None else self._read_piece()
        except (OSError, EOFError, lzma.LZMAError, ValueError) as e:
            raise self._corrupt(e) from None
        except Exception as e:   # pyarrow's errors (ArrowInvalid, ...)
            if type(e).__module__.startswith("pyarrow"):
                raise self._corrupt(e) from None
            raise
        self._ahead = None
        if piece:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="hpcprep-decompress")
            self._ahead = self._pool.submit(self._read_piece)
        return piece

    def _read_piece(self) -> bytes:
        return bytes(self._f.read(_READ))

    def _corrupt(self, e) -> DataError:
        return DataError(f"{self.path}: corrupt or truncated {self.compression} data "
                         f"after {self.pos} bytes ({e})")

    def range(self, start: int, stop: int) -> bytes:
        """Decompressed bytes ``[start, stop)``: continues the stream, or reopens it to go back."""
        if start < self.pos:
            self.close()
        while self.pos < start:
            if not self.read(min(start - self.pos, _READ)):
                break
        buf = self.read(stop - start)
        if len(buf) != stop - start:
            raise DataError(f"{self.path}: ends at {self.pos} decompressed bytes, before {stop} "
                            f"(changed since planned?)")
        return buf

    def close(self) -> None:
        """Close the file (after the piece being read ahead, if any) and stop the thread."""
        if self._ahead is not None:
            self._ahead.cancel() or self._ahead.exception()
        if self._pool is not None:
            self._pool.shutdown()
        if self._f is not None:
            self._f.close()
        self._f, self._ahead, self._pool, self._left, self.pos = None, None, None, b"", 0


def first_line(stream: Decompressed, limit: int = 1 << 16) -> bytes:
    """The first line of a stream (with its newline), reading at most ``limit`` bytes of it."""
    buf = b""
    while b"\n" not in buf and len(buf) < limit:
        piece = stream.read(4096)
        if not piece:
            break
        buf += piece
    k = buf.find(b"\n")
    return buf if k < 0 else buf[:k + 1]


@dataclass(frozen=True)
class Piece:
    """``lines`` physical lines of a decompressed file: bytes ``[start, stop)``, ``records`` records."""

    start: int
    stop: int
    records: int
    lines: int


def pieces(stream: Decompressed, data_start: int, chunk_lines: int):
    """Yield ``(Piece, bytes)`` of ``chunk_lines`` lines each (the last may have fewer),
    from decompressed byte ``data_start`` to the end."""
    stream.range(0, data_start)
    at, carry = data_start, b""
    while True:
        parts, have, eof = [carry], count_newlines(carry), False
        while have < chunk_lines:   # each part counted once, joined once
            more = stream.read(_READ)
            if not more:
                eof = True
                break
            parts.append(more)
            have += count_newlines(more)
        if eof:
            body, carry = b"".join(parts), b""
        else:   # the chunk_lines-th newline is in the last part: cut it, join the body once
            last = np.flatnonzero(np.frombuffer(parts[-1], np.uint8) == 10)
            cut = int(last[chunk_lines - (have - len(last)) - 1]) + 1
            carry = parts[-1][cut:]
            parts[-1] = parts[-1][:cut]
            body = b"".join(parts)
        del parts
        if body:
            nbuf = _normalize(body)
            lines, blank = newline_counts(nbuf)
            yield Piece(at, at + len(body), lines - blank, lines), body
            at += len(body)
        if eof:
            return


# --------------------------------------------------------------------------- kept text

class KeptText:
    """Write a compressed file's decompressed text to ``keep_dir`` as it is counted.

    The kept file holds the text at the same offsets (bytes before ``data_start``
    are not written, but the one before it is a newline, so a range there starts at
    a line start). :meth:`done` gives the entry :func:`kept_range` reads it by
    (the counting pass keeps them in ``InputPlan.kept_text``, per process).
    """

    def __init__(self, keep_dir: str, path: str, file_index: int, data_start: int):
        os.makedirs(keep_dir, exist_ok=True)
        self.source, self.path = path, os.path.join(keep_dir, f"inflated-{file_index:06d}.txt")
        self._f = open(self.path, "wb")
        if data_start:
            self._f.seek(data_start - 1)
            self._f.write(b"\n")

    def write(self, buf: bytes) -> None:
        self._f.write(buf)

    def done(self) -> tuple[str, int, int]:
        """Close the kept file; its entry: (kept path, source size, source mtime)."""
        self._f.close()
        st = os.stat(self.source)
        return self.path, st.st_size, st.st_mtime_ns

    def discard(self) -> None:
        self._f.close()
        os.unlink(self.path)


def kept_range(kept_text: dict, path: str, start: int, stop: int) -> bytes | None:
    """Decompressed bytes ``[start, stop)`` of ``path`` from its kept text, or None if not kept
    (or the file changed, or its kept text is gone). ``kept_text``: source path -> the
    entry of :meth:`KeptText.done`."""
    kept = kept_text.get(path)
    if kept is None or not os.path.exists(kept[0]):
        return None
    st = os.stat(path)
    if (st.st_size, st.st_mtime_ns) != kept[1:]:
        return None
    from .csv_split import _read_range

    return _read_range(kept[0], start, stop)
