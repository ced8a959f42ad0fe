"""Issue 13's size limits (module <= 400 lines, function <= 60 lines) over the whole package.

``CHECKED`` is the whole package: every module of ``hpcprep/`` is within the
limits (docs/ARCHITECTURE.md, "Size limits"); scripts/check_structure.py names
an offender.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKER = ROOT / "scripts" / "check_structure.py"

#: Modules and folders (relative to the repository) under the limits; extend, never shrink.
CHECKED = ["hpcprep"]


def run_checker(*paths) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECKER), *map(str, paths)], capture_output=True,
                          text=True, timeout=60)


def test_checked_modules_are_within_the_limits():
    proc = run_checker(*(ROOT / p for p in CHECKED))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_checker_names_a_long_module_and_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    (tmp_path / "long.py").write_text(f"def long_one():\n{body}\n" + "\n" * 340)
    (tmp_path / "short.py").write_text("def short_one():\n    return 1\n")
    proc = run_checker(tmp_path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout
    assert lines[0].endswith("long.py: module has 401 lines (limit 400)")
    assert lines[1].endswith("long.py:1: function long_one has 61 lines (limit 60)")
    assert run_checker(tmp_path / "short.py").returncode == 0
