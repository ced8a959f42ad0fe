"""``hpcprep train DATASET [--config CONFIG.toml] [--set key=value ...] [--resume CKPT] [--out DIR]``.

:func:`register` adds the subcommand to the main ``hpcprep`` parser; the
subcommand can also run alone as ``python -m hpcprep.train ...``.
The configuration is the ``[train]`` table of ``--config`` (other tables are
ignored) updated by ``--set train.key=value`` (or ``key=value``; values are TOML:
``--set train.hidden=[32,16]``, ``--set 'train.emulate_slowdown={1=2.0}'``,
bare words are strings). Rank 0 validates it before any work and broadcasts
the result, so a bad key is reported once and every rank stops.
"""

import argparse
import sys
import tomllib

from ..errors import ConfigError
from ..mpi.agree import root_decides
from .spec import TRAIN_SPEC, validate_config


def parse_set(item: str):
    """``train.key=value`` or ``key=value`` -> (key, value parsed as TOML, else a string)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if key.startswith("train."):
        key = key[len("train."):]
    elif "." in key:
        raise ConfigError(f"--set {item!r}: hpcprep train only takes train.* keys")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return key, value


def load_config(config_path=None, sets=()) -> dict:
    """The validated ``[train]`` table from a TOML file and ``--set`` items."""
    table = {}
    if config_path:
        try:
            with open(config_path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"--config {config_path}: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"--config {config_path}: not valid TOML: {e}") from None
        table = dict(doc.get("train", {}))
    for item in sets:
        key, value = parse_set(item)
        table[key] = value
    return validate_config(table)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="hpcprep dataset folder (the output of hpcprep run)")
    parser.add_argument("--config", help="TOML file; its [train] table is used")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a [train] key, e.g. --set train.lr=0.05 (repeatable)")
    parser.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint.h5")
    parser.add_argument("--out", default="hpcprep-train", metavar="DIR",
                        help="folder for train_log.jsonl, checkpoint.h5, model.h5 (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no table on stdout")


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``train`` to the ``hpcprep`` subcommands; the handler is ``args.func(args, comm) -> int``."""
    parser = subparsers.add_parser(
        "train", help="data-parallel training on an hpcprep dataset",
        description="Train logreg/softmax/mlp data-parallel (run under mpiexec). "
                    "[train] keys: " + ", ".join(TRAIN_SPEC))
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args, comm) -> int:
    """Handle ``hpcprep train`` (collective over ``comm``)."""
    from .trainer import train   # torch and the loader: only when training

    cfg = root_decides(comm, load_config, args.config, args.set)
    train(args.dataset, cfg, comm, out=args.out, resume=args.resume,
          stream=None if args.quiet else sys.stdout)
    return 0


def config_reference() -> str:
    """The ``[train]`` keys as a Markdown table (for docs/train.md)."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key, p in TRAIN_SPEC.items():
        rows.append(f"| `{key}` | `{p.default!r}` | {p.allowed()} | {p.doc} |")
    return "\n".join(rows)
