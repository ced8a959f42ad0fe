"""Restart after a time limit: the fitted standardize layers, saved once fitted (docs/cluster.md).

A run whose config has a fitting ``[[standardize]]`` layer keeps a checkpoint
folder ``.<name>.checkpoint`` next to its output (not a ``.tmp-`` folder: the
next run's cleanup of dead runs leaves it alone). ``checkpoint.json`` names the
run it belongs to (:func:`run_key`: the validated ``seed``, ``[input]`` and
``[[standardize]]``, the input files' paths, sizes and mtimes, the hpcprep version).
Each layer's ranks write ``layer-NNN.json`` and ``layer-NNN.npz`` (the fitted
attributes of its steps) right after its fit passes; ``dedup``'s ids to drop
are per rank, one ``.npy`` part per rank with the id ranges of the rank's chunks.

A later run on the same output that finds a checkpoint of its own key skips the
fit passes of the saved layers (the output is byte-identical: fitting is a
function of the rows, not of the layout); a checkpoint of another key is never
used and removed. The run that commits removes it, and so does a run that fails
with an error; a killed run, or one stopped at the fit boundary on request
(``$HPCPREP_STOP_FILE``), leaves it. Spilled sorted runs are never reused: a run
killed after the exchange resumes from here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, is_dataclass

import numpy as np

from .. import __version__
from ..config import RunConfig
from ..errors import OutputError
from ..mpi.agree import AgreedError
from .checkpoint_files import (FORMAT, INFO, ROW_IDS, checkpoint_path, crc32_of, decode, encode,
                               fitted_state, has_file, id_ranges, ids_within, is_checkpoint, now,
                               read_json, remove_checkpoint, write_atomic)

#: The environment variable naming a file whose presence stops the run after its fit passes.
STOP_FILE_ENV = "HPCPREP_STOP_FILE"
#: Exit status of a run stopped at the fit boundary (EX_TEMPFAIL: run it again to resume).
STOPPED_EXIT = 75
#: The config keys fitted statistics depend on; a resumed run may change any other (the plan's
#: subsampling, which changes the rows, is compared apart: :meth:`Checkpoint.begin`).
KEY_TABLES = ("seed", "input", "standardize")


class RunStopped(AgreedError):
    """The run stopped after writing its checkpoint, as asked (exit status 75, not an error)."""

    exit_code = STOPPED_EXIT
    prefix = "stopped"


def run_key(cfg: RunConfig, input_files) -> dict:
    """What a checkpoint must match: config hash, input files (path, size, mtime), version."""
    kept = {k: _plain(getattr(cfg, k)) for k in KEY_TABLES}
    text = json.dumps(kept, sort_keys=True, default=repr)
    files = []
    for path in input_files:
        st = os.stat(path)
        files.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    return {"version": __version__, "config": hashlib.sha256(text.encode()).hexdigest(),
            "input": files}


def _plain(value):
    """A config value as the plain dicts and lists it was validated as (a section: ``asdict``)."""
    return asdict(value) if is_dataclass(value) else value


def _mismatch(saved: dict, key: dict) -> str | None:
    """Why a checkpoint of key ``saved`` is not this run's (None: it is)."""
    if saved.get("version") != key["version"]:
        return f"written by hpcprep {saved.get('version')}, this is {key['version']}"
    if saved.get("config") != key["config"]:
        return "written for another config (seed, [input] or [[standardize]] differ)"
    if saved.get("input") != key["input"]:
        old = {f[0]: f[1:] for f in saved.get("input") or []}
        for path, *stat in key["input"]:
            if old.get(path) != stat:
                return f"input {path} is new or changed (size or mtime) since"
        return "an input file it read is gone"
    return None


# ---- the run's checkpoint --------------------------------------------------------------------
class Checkpoint:
    """This run's checkpoint: the same object on every rank (rank 0 finds it, then broadcasts it).

    Attributes
    ----------
    folder : str
        ``.<name>.checkpoint`` next to the output.
    layers : dict of int -> dict
        The saved layers this run restores (their ``layer-NNN.json``).
    fitting : list of int
        The layers that fit statistics (none: no checkpoint at all).
    created : str or None
        When the checkpoint was started (ISO time).
    """

    def __init__(self, folder: str = "", key=None, layers=None, fitting=(), created=None):
        self.folder, self.key, self.created = folder, key, created
        self.layers = dict(layers or {})
        self.fitting = list(fitting)
        self.keep = False             # True once the run stopped on request: not discarded
        self.subsample: list = []
        self._crossed = False

    @classmethod
    def find(cls, output: str, cfg: RunConfig, input_files, resume: bool, log) -> "Checkpoint":
        """Rank 0, output lock held: this run's checkpoint, found or started.

        A checkpoint of another key, or with a damaged file, is never used: one
        progress line says why and it is removed. With ``resume`` a run without a
        usable checkpoint is an :class:`~hpcprep.errors.OutputError` (and the
        checkpoint is left as it is).
        """
        from .read import layer_fits

        folder = checkpoint_path(output)
        fitting = [j for j, t in enumerate(cfg.standardize) if layer_fits(t)]
        key = run_key(cfg, input_files)
        info, layers, why = _examine(folder, key)
        if resume and not (fitting and layers):
            why = why or ("no [[standardize]] layer of this config fits statistics" if not fitting
                          else "there is none" if info is None else "no layer was fitted yet")
            raise OutputError(f"--resume: cannot resume from {folder}: {why}")
        if info is not None and (why or not fitting):
            log(f"checkpoint {folder} of {info.get('created')} not used and removed: "
                f"{why or 'no layer fits statistics now'}")
            remove_checkpoint(folder)
            info = None
        if not fitting:
            return cls(folder, key)
        if info is None:
            info = {"format": FORMAT, "created": now(), "key": key}
            os.makedirs(folder, exist_ok=True)
            write_atomic(os.path.join(folder, INFO), lambda fh: fh.write(json.dumps(info).encode()))
        return cls(folder, key, layers, fitting, info["created"])

    @property
    def last_to_fit(self) -> int:
        """The last layer this run fits (-1: none, e.g. every one is restored)."""
        return max((j for j in self.fitting if j not in self.layers), default=-1)

    def begin(self, ctx, subsample: dict) -> None:
        """Every rank, before the read: check the plan's subsampling; say what is resumed."""
        self.subsample = sorted([int(k), int(v)] for k, v in subsample.items())
        if any(m.get("subsample") != self.subsample for m in self.layers.values()):
            ctx.progress.log(f"checkpoint {self.folder} not used: the plan subsamples the input "
                             f"differently now; fitting again")
            self.layers = {}
        if not self.layers:
            return
        skipped = sum(len(m["passes"]) for m in self.layers.values())
        done = "fit done" if self.last_to_fit < 0 else \
            "fitted " + ", ".join(f"standardize[{j}]" for j in sorted(self.layers))
        ctx.progress.log(f"resuming from the checkpoint of {self.created}: {done}, skipping "
                         f"{skipped} fit pass(es) ({self.folder})")
        ctx.report["resumed"] = {"from": self.created, "stage": "fit", "layers": sorted(self.layers),
                                 "skipped_passes": skipped}

    # ---- saving and restoring one layer (collective over the layer's ranks) --------------------
    def save(self, ctx, layer) -> None:
        """After ``layer``'s fit passes: its ranks write their row-id parts, its first rank the
        fitted attributes (``layer-NNN.npz``) and then ``layer-NNN.json``."""
        if layer.index not in self.fitting:
            return
        comm, j = layer.ctx.comm, layer.index
        parts = {}
        for k, step in enumerate(layer.steps):
            attr = ROW_IDS.get(step.op)
            if attr and step.needs_fit:
                name = f"layer-{j:03d}-step-{k:03d}-part-{comm.Get_rank():05d}.npy"
                ids = np.ascontiguousarray(getattr(step, attr))
                path = os.path.join(self.folder, name)
                write_atomic(path, lambda fh: np.save(fh, ids, allow_pickle=False))
                parts[str(k)] = {"file": name, "size": os.path.getsize(path),
                                 "ranges": self._ranges(ctx, j)}
        gathered = comm.gather(parts, root=0)
        if comm.Get_rank() == 0:
            self._write_layer(layer, {k: [g[k] for g in gathered] for k in parts})

    def _write_layer(self, layer, parts: dict) -> None:
        j, arrays = layer.index, {}
        try:
            steps = {str(k): encode(fitted_state(s), arrays)
                     for k, s in enumerate(layer.steps) if s.needs_fit}
        except TypeError as e:
            layer.log(f"warning: checkpoint: standardize[{j}] not saved: {e}")
            return
        npz = os.path.join(self.folder, f"layer-{j:03d}.npz")
        write_atomic(npz, lambda fh: np.savez(fh, **arrays))
        meta = {"layer": j, "saved": now(), "passes": list(layer.passes),
                "subsample": self.subsample, "steps": steps, "parts": parts,
                "npz": {"file": os.path.basename(npz), "size": os.path.getsize(npz),
                        "crc32": crc32_of(npz)}}
        write_atomic(os.path.join(self.folder, f"layer-{j:03d}.json"),
                lambda fh: fh.write(json.dumps(meta).encode()))

    def restore(self, ctx, layer) -> bool:
        """Give ``layer``'s steps their saved fitted attributes; False if it was not saved."""
        meta = self.layers.get(layer.index)
        if meta is None:
            return False
        with np.load(os.path.join(self.folder, meta["npz"]["file"]), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        for k, step in enumerate(layer.steps):
            layer._bind_upto(k)   # each step binds to the names its restored predecessor gives
            if str(k) not in meta["steps"]:
                continue
            for name, value in decode(meta["steps"][str(k)], arrays).items():
                setattr(step, name, value)
            if str(k) in meta["parts"]:
                setattr(step, ROW_IDS[step.op],
                        self._row_ids(self._ranges(ctx, layer.index), meta["parts"][str(k)]))
        layer.passes = list(meta["passes"])
        return True

    def _ranges(self, ctx, j: int):
        """Global id ranges of the chunks this rank of layer ``j`` handles (None: unknown).
        Rank ``i`` of a standardize layer gets the chunks of input rank ``i``."""
        group = ctx.topo.std_ranks[j]
        if len(group) != len(ctx.topo.input_ranks):
            return None
        return id_ranges(ctx.plan.chunks_of(group.index(ctx.rank)))

    def _row_ids(self, mine, parts) -> np.ndarray:
        """The saved row ids inside this rank's id ranges ``mine``, from the parts that hold any."""
        pieces = [np.empty(0, np.int64)]
        for p in parts:
            if mine is None or p["ranges"] is None or _overlap(mine, p["ranges"]):
                ids = np.load(os.path.join(self.folder, p["file"]), allow_pickle=False)
                pieces.append(ids_within(ids, mine))
        return np.sort(np.concatenate(pieces))

    # ---- the fit boundary, and the end ---------------------------------------------------------
    def boundary(self, ctx) -> None:
        """Every rank, once, when every layer this run fits is fitted and saved: stop the run
        (:class:`RunStopped`) if ``$HPCPREP_STOP_FILE`` exists (rank 0 looks). No-op when this
        run fits nothing."""
        if self._crossed or self.last_to_fit < 0:
            return
        self._crossed = True
        from mpi4py import MPI

        path = os.environ.get(STOP_FILE_ENV, "")
        asked = ctx.rank == 0 and bool(path) and os.path.exists(path)
        if not ctx.comm.allreduce(int(asked), op=MPI.MAX):   # also: every layer's files written
            return
        self.keep = True
        raise RunStopped(f"after the fit passes, as {path} asked; the checkpoint "
                         f"{self.folder} is kept: run the same config again to resume")

    def discard(self) -> None:
        """After a failure (any rank): remove the checkpoint, unless the run stopped on request."""
        if self.fitting and not self.keep:
            remove_checkpoint(self.folder)

    def remove(self) -> None:
        """Rank 0, once the run committed: the checkpoint is not needed any more."""
        if self.fitting:
            remove_checkpoint(self.folder)


def _overlap(a, b) -> bool:
    return any(lo < hi2 and lo2 < hi for lo, hi in a for lo2, hi2 in b)


def _examine(folder: str, key: dict):
    """``(info, layers, why)`` of the checkpoint folder: its ``checkpoint.json`` (None if there
    is none), its saved layers, and why it is not this run's or is damaged (None: it can be used)."""
    if not os.path.lexists(folder):
        return None, {}, None
    if not is_checkpoint(folder):
        raise OutputError(f"{folder} is in the way: it is not an hpcprep checkpoint (it holds "
                          f"entries hpcprep does not write there); move it away")
    info = read_json(os.path.join(folder, INFO))
    why = _mismatch(info.get("key") or {}, key)
    if why:
        return info, {}, why
    layers = {}
    for name in sorted(os.listdir(folder)):
        m = re.fullmatch(r"layer-(\d{3})\.json", name)
        if m:
            meta = read_json(os.path.join(folder, name))
            if not _complete(folder, meta):
                return info, {}, f"{name} or a file it names is incomplete or changed"
            layers[int(m.group(1))] = meta
    return info, layers, None


def _complete(folder: str, meta: dict) -> bool:
    """Whether the files a ``layer-NNN.json`` names are there, whole."""
    try:
        npz = meta["npz"]
        return (has_file(folder, npz["file"], npz["size"])
                and crc32_of(os.path.join(folder, npz["file"])) == npz["crc32"]
                and all(has_file(folder, p["file"], p["size"])
                        for ps in meta["parts"].values() for p in ps)
                and isinstance(meta["steps"], dict) and isinstance(meta["passes"], list))
    except (KeyError, TypeError, AttributeError):
        return False
