"""The training log: JSON lines and a short table, written by rank 0."""

import json
import math
from pathlib import Path


class TrainLog:
    """JSON-lines log and a short table, on rank 0 only, each line one write call."""

    COLUMNS = [("epoch", 5, "d"), ("step", 7, "d"), ("train_loss", 10, ".4f"), ("val_loss", 9, ".4f"),
               ("val_acc", 8, ".4f"), ("val_auc", 8, ".4f"), ("sec/epoch", 9, ".3f"),
               ("allreduce%", 10, ".1f")]

    def __init__(self, comm, out: Path | None, stream, append: bool):
        self.rank0 = comm.Get_rank() == 0
        self.stream = stream
        self.file = None
        if self.rank0 and out is not None:
            self.file = open(out / "train_log.jsonl", "a" if append else "w")
        self.header_done = False

    def line(self, text: str) -> None:
        if self.rank0 and self.stream is not None:
            self.stream.write(text + "\n")
            self.stream.flush()

    def record(self, rec: dict) -> None:
        if not self.rank0:
            return
        if self.file is not None:
            self.file.write(json.dumps(rec) + "\n")
            self.file.flush()
        if not self.header_done:
            self.line(" ".join(f"{name:>{w}}" for name, w, _ in self.COLUMNS))
            self.header_done = True
        values = [rec["epoch"], rec["step"], rec["train_loss"], rec.get("val_loss"),
                  rec.get("val_accuracy"), rec.get("val_auc"), rec["epoch_seconds"],
                  100.0 * rec["allreduce_share"]]
        cells = []
        for (name, w, fmt), v in zip(self.COLUMNS, values):
            ok = v is not None and not (isinstance(v, float) and math.isnan(v))
            cells.append(f"{v:>{w}{fmt}}" if ok else f"{'-':>{w}}")
        self.line(" ".join(cells))

    def close(self):
        if self.file is not None:
            self.file.close()
