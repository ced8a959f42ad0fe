"""Check the size limits of issue 13: no module over 400 lines, no function over 60 lines.

Usage: ``python scripts/check_structure.py [PATH ...]`` (default: every module in ``hpcprep/``).
Prints one line per offender and exits 1 if there is any, else 0.
"""

import argparse
import ast
import pathlib
import sys

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
ROOT = pathlib.Path(__file__).resolve().parent.parent


def modules(paths) -> list[pathlib.Path]:
    """The ``.py`` files named by ``paths`` (folders are searched recursively)."""
    found = []
    for p in map(pathlib.Path, paths):
        found += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return found


def offenders(path: pathlib.Path) -> list[str]:
    """One line per limit that the module ``path`` or one of its functions breaks."""
    text = path.read_text()
    lines = []
    n = len(text.splitlines())
    if n > MAX_MODULE_LINES:
        lines.append(f"{path}: module has {n} lines (limit {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                lines.append(f"{path}:{node.lineno}: function {node.name} has {length} lines "
                             f"(limit {MAX_FUNCTION_LINES})")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=[str(ROOT / "hpcprep")],
                        help="modules or folders to check (default: hpcprep/)")
    args = parser.parse_args(argv)
    found = [line for path in modules(args.paths) for line in offenders(path)]
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
