"""The CLI contract: every subcommand is ``func(args, comm)``, reached through ``hpcprep.cli.main``.

Each test runs ``main([...])`` in this process (one rank: ``COMM_WORLD`` of a
singleton MPI) and reads the exit code from the ``SystemExit`` that ``main``
raises, as the ``hpcprep`` command would exit.
"""

import argparse
import inspect
import json

import pytest

from hpcprep.cli import build_parser, main

#: The subcommands tested here through ``main``; a new subcommand needs a test and a name here.
TESTED = {"generate", "run", "inspect", "demo", "plan", "train"}

CONFIG = """\
seed = 3

[input]
paths = ["raw/*.h5"]
features = "features"
label = "labels"
chunk_rows = 512

[[standardize]]
steps = [{ op = "dropna" }, { op = "scale", method = "standard" }]

[[sample]]
op = "shuffle"

[output]
path = "out"
"""

PROBLEM = """\
[[workers]]
name = "w"
speed = 10.0
count = 2

[[tasks]]
name = "t"
units = 100
"""


def rc_of(argv) -> int:
    """Exit code of ``hpcprep ARGV`` run through ``cli.main`` in this process."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    return info.value.code


def subcommands() -> dict:
    """``name -> handler`` of every subcommand of the real parser (plugins included)."""
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: sub.get_default("func") for name, sub in action.choices.items()}


def test_every_subcommand_is_func_args_comm_and_has_a_test_here():
    subs = subcommands()
    assert set(subs) == TESTED
    for name, func in subs.items():
        params = list(inspect.signature(func).parameters.values())
        assert [p.name for p in params] == ["args", "comm"], name
        assert all(p.default is inspect.Parameter.empty for p in params), name   # comm is given


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    """generate -> run, through ``main``; returns the work folder."""
    work = tmp_path_factory.mktemp("cli")
    assert rc_of(["generate", "--rows", 3000, "--features", 3, "--files", 2, "--seed", 1,
                  "--out", work / "raw", "--quiet"]) == 0
    (work / "config.toml").write_text(CONFIG)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        assert rc_of(["run", "config.toml", "--quiet"]) == 0
    return work


def test_generate_and_run(produced, capsys):
    manifest = json.loads((produced / "out" / "manifest.json").read_text())
    assert manifest["rows"] > 0 and (produced / "raw" / "truth.json").exists()


def test_inspect_verifies(produced, capsys):
    assert rc_of(["inspect", produced / "out"]) == 0
    assert "verification: OK" in capsys.readouterr().out


def test_train_writes_a_model(produced, capsys):
    out = produced / "train"
    assert rc_of(["train", produced / "out", "--out", out, "--quiet",
                  "--set", "train.epochs=1", "--set", "train.batch_size=64"]) == 0
    assert (out / "model.h5").exists()


def test_plan_prints_the_plan(tmp_path, capsys):
    (tmp_path / "p.toml").write_text(PROBLEM)
    assert rc_of(["plan", tmp_path / "p.toml", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert sum(w["units"] for w in plan["workers"]) == 100


def test_demo_generates_runs_and_inspects(tmp_path, capsys):
    assert rc_of(["demo", "--workdir", tmp_path / "demo", "--rows", 2000, "--features", 3,
                  "--files", 1]) == 0
    out = capsys.readouterr().out
    assert "[demo] 3/3" in out and "verification: OK" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "missing.toml"], "missing.toml"),
    (["plan", "missing.toml"], "missing.toml"),
    (["train", "missing-dataset"], "missing-dataset"),
    (["generate", "--rows", "-1"], "--rows >= 0"),
])
def test_agreed_errors_exit_2_printed_once(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert rc_of(argv) == 2
    err = capsys.readouterr().err
    assert err.count("hpcprep: error: ") == 1 and message in err
