"""A standardization layer: its steps, its fit passes and its per-step drop counts."""

import time
import warnings
from dataclasses import dataclass, replace

import numpy as np

from ..mpi.agree import agreed_on
from ..errors import FitError
from ..steps import LayerContext, make_step
from ..steps.rejects import RejectsWriter


@dataclass(frozen=True)
class StageRecord:
    """What the steps of one layer already applied to a chunk dropped (not yet counted).

    Attributes
    ----------
    rows_in : int
        Rows of the chunk when it entered the layer.
    steps : tuple of (step, dropped, rejected)
        Per applied step, in order: its index, the rows dropped per reason, and
        (rejects files only) ``(rows, [(positions, reason), ...])``: the dropped
        rows as they entered the step, to be written in the final pass.
    """

    rows_in: int
    steps: tuple = ()

    def plus(self, step: int, dropped: dict, before=None, rejected=None) -> "StageRecord":
        """This record and what step ``step`` dropped (``before``: the chunk it got, with rejects)."""
        kept = None
        if before is not None and rejected:
            pos = np.concatenate([p for p, _ in rejected])
            at, parts = 0, []
            for p, reason in rejected:
                parts.append((np.arange(at, at + len(p)), reason))
                at += len(p)
            kept = (before.take(pos), parts)  # only the dropped rows, same order
        return StageRecord(self.rows_in, self.steps + ((step, dict(dropped), kept),))


class StandardizeLayer:
    """The steps of one ``[[standardize]]`` table, bound to the layer's communicator.

    Parameters
    ----------
    index : int
        Position of the layer in the chain.
    table : dict
        The validated ``[[standardize]]`` table.
    feature_names : list of str
        Names of the features entering the layer.
    comm : communicator
        The layer's ranks (fitted statistics are merged over it).
    seed : int
    log : callable
        Prints a line on the layer's first rank (progress and warnings).
    rejects_path : str, optional
        This rank's rejects part file (``[[standardize]] rejects = true``):
        rows dropped in the final pass are appended there with step and reason.
    """

    def __init__(self, index: int, table: dict, feature_names: list[str], comm, seed: int, log,
                 rejects_path: str | None = None):
        self.index = index
        self.ctx = LayerContext(comm, seed, index)
        self.log = log
        self.steps = [make_step(spec, f"standardize[{index}].steps[{j}]")
                      for j, spec in enumerate(table["steps"])]
        self._names = list(feature_names)
        self._bound = 0
        self.labels = [f"{index}.{j}.{s.op}" for j, s in enumerate(self.steps)]
        self.counts = {label: {} for label in self.labels}
        self.rows_in = self.rows_out = 0
        self.passes: list[str] = []
        self.seconds: dict[str, float] = {}
        self.rejects = RejectsWriter(rejects_path) if rejects_path else None

    def _bind_upto(self, j: int) -> None:
        """Bind steps before ``j`` + 1 in order (each after the previous one's fit)."""
        while self._bound <= min(j, len(self.steps) - 1):
            k = self._bound
            self.steps[k].bind(self._names if k == 0 else self.steps[k - 1].feature_names_out_)
            self._bound += 1

    @property
    def feature_names_out(self) -> list[str]:
        """Feature names leaving the layer (final once the layer is fitted)."""
        self._bind_upto(len(self.steps))
        return list(self.steps[-1].feature_names_out_) if self.steps else list(self._names)

    @property
    def needs_passes(self) -> bool:
        """True if some step fits, so the layer reads its input more than once."""
        return any(s.needs_fit for s in self.steps)

    def fit(self, stream) -> None:
        """Fit every step that needs global statistics, one pass over ``stream`` each.

        Each pass applies to a chunk only the steps it has not had yet
        (``chunk.stage``) and hands the result back to the stream
        (``stream.keep``): a stream that caches its chunks replaces its entry, so
        the next pass starts from there and every step runs once per chunk. What
        the steps dropped travels with the chunk (``chunk.records``) and is counted
        (and written to the rejects file) in the final pass, as if the steps had
        run there. A stream that does not cache hands out the rows as read again,
        and the steps are re-applied.
        """
        for j, step in enumerate(self.steps):
            if not step.needs_fit:
                continue
            self._bind_upto(j)
            t0 = time.perf_counter()
            self.log(f"standardize[{self.index}] pass {len(self.passes) + 1}: fit {step.describe()}")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    step.fit_layer(self.ctx, self._advanced(stream, j))
                except FitError as e:   # decided from the merged state: alike on every rank
                    raise agreed_on(self.ctx.comm, e) from None
            for w in caught:
                self.log(f"warning: standardize[{self.index}] {w.message}")
            self.passes.append(f"fit {self.labels[j]}")
            self.seconds[f"fit {self.labels[j]}"] = time.perf_counter() - t0

    def _advanced(self, stream, upto: int):
        """The chunks of a non-final pass with steps ``< upto`` applied, kept back in ``stream``."""
        for chunk in stream.iterate(final=False):
            chunk = self.advance(chunk, upto)
            stream.keep(chunk)
            yield chunk

    def advance(self, chunk, upto: int):
        """Apply the steps ``chunk.stage .. upto - 1`` of this layer; record what they drop.

        Nothing is counted here: the drops go into the chunk's record of this
        layer and are counted when the chunk passes :meth:`apply_all` with
        ``count=True``.
        """
        done = chunk.stage.get(self.index, 0)
        if done >= upto:
            return chunk
        self._bind_upto(upto - 1)
        record = chunk.records.get(self.index) or StageRecord(len(chunk))
        for k in range(done, upto):
            if self.rejects is not None:
                before = chunk
                chunk, dropped, rejected = self.steps[k].apply_rejects(before)
                record = record.plus(k, dropped, before, rejected)
            else:
                chunk, dropped = self.steps[k].apply(chunk)
                record = record.plus(k, dropped)
        return replace(chunk, stage={**chunk.stage, self.index: upto},
                       records={**chunk.records, self.index: record})

    def apply_all(self, chunk, count: bool):
        """Apply every step; with ``count`` (the final pass) the rows in, out and dropped are recorded.

        Steps already applied to ``chunk`` in a fit pass (``chunk.stage``) are not
        applied again; with ``count`` their recorded drops are counted (and their
        rejected rows written) here, in step order, exactly as if they ran now.
        Without ``count`` (a later layer's fit pass) the drops are recorded in the chunk.
        """
        if not count:
            return self.advance(chunk, len(self.steps))
        self._bind_upto(len(self.steps) - 1)
        done = chunk.stage.get(self.index, 0)
        if done:
            record = chunk.records[self.index]
            chunk = replace(chunk, stage={k: v for k, v in chunk.stage.items() if k != self.index},
                            records={k: v for k, v in chunk.records.items() if k != self.index})
            self.rows_in += record.rows_in
            for k, dropped, rejected in record.steps:
                if self.rejects is not None and rejected is not None:
                    self.rejects.write(self.labels[k], rejected[0], rejected[1],
                                       self.steps[k].feature_names_in_)
                self._count(self.labels[k], dropped)
        else:
            self.rows_in += len(chunk)
        for label, step in zip(self.labels[done:], self.steps[done:]):
            if self.rejects is not None:
                before = chunk
                chunk, dropped, rejected = step.apply_rejects(before)
                self.rejects.write(label, before, rejected, step.feature_names_in_)
            else:
                chunk, dropped = step.apply(chunk)
            self._count(label, dropped)
        self.rows_out += len(chunk)
        return chunk

    def _count(self, label: str, dropped: dict) -> None:
        bucket = self.counts[label]
        for reason, n in dropped.items():
            bucket[reason] = bucket.get(reason, 0) + int(n)

    def stats(self) -> dict:
        """Fitted parameters of every step, keyed ``<layer>.<index>.<op>``."""
        return {label: step.stats() for label, step in zip(self.labels, self.steps) if step.stats()}

    def report(self) -> dict:
        """Rows in and out, drops by step and reason, and the passes: each fit, then the apply pass."""
        passes = self.passes + ["apply"]
        return {"rows_in": self.rows_in, "rows_out": self.rows_out, "passes": len(passes),
                "pass_reasons": passes, "dropped": self.counts, "seconds": self.seconds}
