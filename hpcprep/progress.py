"""Progress lines printed by one rank while a run works."""

import sys
import time

from .mpi.agree import write_line


class Progress:
    """Prints whole lines on the chosen rank only, with a throttled rows/s ticker.

    Parameters
    ----------
    enabled : bool
        Whether this rank prints (rank 0 of the world by default).
    every : float
        Least seconds between two ticker lines.
    quiet : bool
        Print nothing but warnings.
    """

    def __init__(self, enabled: bool, every: float = 2.0, quiet: bool = False):
        self.enabled, self.every, self.quiet = enabled, every, quiet
        self.t0 = time.perf_counter()
        self._last = self.t0
        self._phase = ""
        self._phase_t0 = self.t0
        self._rows = 0

    def log(self, message: str) -> None:
        if self.enabled and (not self.quiet or message.startswith("warning")):
            write_line(f"[hpcprep {time.perf_counter() - self.t0:7.1f}s] {message}", sys.stdout)

    def phase(self, name: str) -> None:
        """Start counting rows for a new phase (e.g. a pass of a layer)."""
        self._phase, self._phase_t0, self._rows = name, time.perf_counter(), 0

    def tick(self, rows: int) -> None:
        """Count rows done by this rank; print a line now and then."""
        self._rows += rows
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            rate = self._rows / max(now - self._phase_t0, 1e-9)
            self.log(f"{self._phase}: {self._rows:,} rows on this rank, {rate:,.0f} rows/s")
