"""A standardization layer: its steps, its fit passes and its per-step drop counts."""

import time
import warnings

from ..steps import LayerContext, make_step
from ..steps.rejects import RejectsWriter


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
        """Fit every step that needs global statistics, one pass over ``stream`` each."""
        for j, step in enumerate(self.steps):
            if not step.needs_fit:
                continue
            self._bind_upto(j)
            t0 = time.perf_counter()
            self.log(f"standardize[{self.index}] pass {len(self.passes) + 1}: fit {step.describe()}")
            chunks = (self._apply(chunk, j, count=False) for chunk in stream.iterate(final=False))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                step.fit_layer(self.ctx, chunks)
            for w in caught:
                self.log(f"warning: standardize[{self.index}] {w.message}")
            self.passes.append(f"fit {self.labels[j]}")
            self.seconds[f"fit {self.labels[j]}"] = time.perf_counter() - t0
        self.passes.append("apply")

    def apply_all(self, chunk, count: bool):
        """Apply every step; with ``count`` the rows in, out and dropped are recorded."""
        return self._apply(chunk, len(self.steps), count)

    def _apply(self, chunk, upto: int, count: bool):
        self._bind_upto(upto - 1)
        if count:
            self.rows_in += len(chunk)
        for label, step in zip(self.labels[:upto], self.steps[:upto]):
            if count and self.rejects is not None:
                before = chunk
                chunk, dropped, rejected = step.apply_rejects(before)
                self.rejects.write(label, before, rejected, step.feature_names_in_)
            else:
                chunk, dropped = step.apply(chunk)
            if count:
                bucket = self.counts[label]
                for reason, n in dropped.items():
                    bucket[reason] = bucket.get(reason, 0) + int(n)
        if count:
            self.rows_out += len(chunk)
        return chunk

    def stats(self) -> dict:
        """Fitted parameters of every step, keyed ``<layer>.<index>.<op>``."""
        return {label: step.stats() for label, step in zip(self.labels, self.steps) if step.stats()}

    def report(self) -> dict:
        return {"rows_in": self.rows_in, "rows_out": self.rows_out, "passes": len(self.passes),
                "pass_reasons": self.passes, "dropped": self.counts, "seconds": self.seconds}
