"""CSV input that must not pass silently (issue 12: items 2, 3, 4, 10, 12).

A text column read as a number, a path that matches no readable file, a raw
categorical column no step encodes: errors before any work. With
``on_bad_row = "error"`` the first bad record in file order, the same at every
rank count and layout. Dropped records findable in report.json and rejects.h5.
"""

import json
import os

import h5py
import numpy as np
import pytest

from conftest import mpirun, write_config
from hpcprep.config import parse_config
from hpcprep.errors import ConfigError, DataError
from hpcprep.io.csv_parse import first_bad_record, open_quote_line
from hpcprep.io.csv_records import QuotedNewlineError
from hpcprep.io.csv_split import read_header
from hpcprep.io.plan import build_input_plan, check_input_columns, expand_paths


def config(text: str, base):
    return parse_config(text, "test", base_dir=str(base))


def plan_of(tmp_path, inp_toml: str):
    cfg = config(f"[input]\n{inp_toml}\n", tmp_path)
    return build_input_plan(cfg.input, 1)


def error_lines(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "error" in line]


def no_output_left(folder, name="out") -> bool:
    return not any(p.startswith(name) or p.startswith(f".{name}") for p in os.listdir(folder))


# --------------------------------------------------------------------------- item 2

DIAMONDS = "carat,cut,price,sold\n" + "".join(
    f"{0.2 + i / 100:.2f},{('Ideal', 'Premium', 'Good')[i % 3]},{300 + i},2024-01-{i % 28 + 1:02d}\n"
    for i in range(50))


def test_text_label_is_an_error_naming_file_column_value_and_what_reads_it(tmp_path):
    (tmp_path / "d.csv").write_text(DIAMONDS)
    with pytest.raises(DataError) as e:
        plan_of(tmp_path, 'paths = ["d.csv"]\nfeatures = ["carat", "price"]\nlabel = "cut"')
    msg = str(e.value)
    assert "d.csv" in msg and "'cut'" in msg and "input.label" in msg and "'Ideal'" in msg
    assert "50 of the first 50 records" in msg and "line 2" in msg
    assert "text label is not supported" in msg and "input.categorical" in msg


def test_date_feature_is_an_error_saying_dates_are_not_parsed(tmp_path):
    (tmp_path / "d.csv").write_text(DIAMONDS)
    with pytest.raises(DataError) as e:
        plan_of(tmp_path, 'paths = ["d.csv"]\nfeatures = ["carat", "sold"]')
    msg = str(e.value)
    assert "'sold'" in msg and "input.features" in msg and "'2024-01-01'" in msg
    assert "looks like a date" in msg


def test_text_feature_error_points_to_categorical(tmp_path):
    (tmp_path / "d.csv").write_text(DIAMONDS)
    with pytest.raises(DataError, match=r"'cut'.*op = \"categorical\", columns = \[\"cut\"\]"):
        plan_of(tmp_path, 'paths = ["d.csv"]\nfeatures = ["cut", "price"]')


def test_a_few_bad_numbers_are_not_a_column_error(tmp_path):
    lines = ["a,b"] + [f"{i},{'x' if i % 3 == 0 else i}" for i in range(30)]  # 10 of 30 bad
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    plan = plan_of(tmp_path, 'paths = ["d.csv"]\nfeatures = ["a", "b"]')
    assert plan.files and plan.chunks


def test_text_label_stops_the_run_once_with_no_output(tmp_path):
    (tmp_path / "d.csv").write_text(DIAMONDS)
    cfg = write_config(tmp_path / "c.toml", '[input]\npaths = ["d.csv"]\nfeatures = ["carat"]\n'
                                            'label = "cut"\n[output]\npath = "out"\n')
    proc = mpirun(2, ["run", cfg, "--quiet"], cwd=tmp_path, check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr
    errs = error_lines(proc)
    assert len(errs) == 1 and "'cut'" in errs[0] and "'Ideal'" in errs[0], errs
    assert no_output_left(tmp_path)


# --------------------------------------------------------------------------- item 3

def test_glob_matching_only_directories_is_an_error(tmp_path):
    (tmp_path / "raw" / "a").mkdir(parents=True)
    (tmp_path / "raw" / "b").mkdir()
    with pytest.raises(DataError, match=r"input.paths: .*raw/\* matches no readable file "
                                        r"\(only directories"):
        expand_paths([str(tmp_path / "raw" / "*")])


def test_directory_path_is_an_error_that_suggests_its_files(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(DataError, match=r"raw matches no readable file \(it is a directory: "
                                        r"give the files in it, e.g. .*raw/\*.csv"):
        expand_paths([str(tmp_path / "raw")])


def test_broken_link_is_not_a_readable_file(tmp_path):
    (tmp_path / "gone.csv").symlink_to(tmp_path / "nowhere.csv")
    with pytest.raises(DataError, match=r"\*.csv matches no readable file \(only "
                                        r"directories, broken links"):
        expand_paths([str(tmp_path / "*.csv")])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file_is_an_error_naming_it(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("a\n1\n")
    p.chmod(0)
    with pytest.raises(DataError, match=r"a.csv \(matched by .*\) cannot be read"):
        expand_paths([str(tmp_path / "*.csv")])


def test_directories_next_to_files_are_skipped(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.csv").write_text("a\n1\n")
    assert expand_paths([str(tmp_path / "*")]) == [str(tmp_path / "a.csv")]


def test_directory_input_stops_the_run_with_no_output(tmp_path):
    (tmp_path / "raw" / "part").mkdir(parents=True)
    cfg = write_config(tmp_path / "c.toml", '[input]\npaths = ["raw/*"]\n[output]\npath = "out"\n')
    proc = mpirun(1, ["run", cfg, "--quiet"], cwd=tmp_path, check=False, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "raw/* matches no readable file" in proc.stderr
    assert no_output_left(tmp_path)


# --------------------------------------------------------------------------- item 4

CAT_CSV = "a,color,y\n" + "".join(f"{i},{('red', 'blue')[i % 2]},{i % 2}\n" for i in range(40))


def test_categorical_column_no_step_encodes_is_a_config_error(tmp_path):
    cfg = config('[input]\npaths = ["d.csv"]\nfeatures = ["a"]\ncategorical = ["color"]\n'
                 '[[standardize]]\nsteps = [{ op = "dropna" }]\n', tmp_path)
    with pytest.raises(ConfigError, match=r"input.categorical: column 'color' would not reach the "
                                          r"output: no step encodes it; add \{ op = \"categorical\", "
                                          r"columns = \[\"color\"\] \}"):
        check_input_columns(cfg)


def test_categorical_step_with_other_columns_does_not_count(tmp_path):
    cfg = config('[input]\npaths = ["d.csv"]\nfeatures = ["a"]\ncategorical = ["color", "size"]\n'
                 '[[standardize]]\nsteps = [{ op = "categorical", columns = ["size"] }]\n', tmp_path)
    with pytest.raises(ConfigError, match="column 'color'"):
        check_input_columns(cfg)
    ok = config('[input]\npaths = ["d.csv"]\nfeatures = ["a"]\ncategorical = ["color", "size"]\n'
                '[[standardize]]\nsteps = [{ op = "categorical" }]\n', tmp_path)
    check_input_columns(ok)  # columns = [] encodes every raw categorical column


def test_categorical_on_hdf5_input_is_an_error(tmp_path):
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["features"] = np.zeros((4, 2))
    with pytest.raises(DataError, match=r"d.h5: input.categorical names CSV columns"):
        plan_of(tmp_path, 'paths = ["d.h5"]\ncategorical = ["color"]')


def test_unencoded_categorical_stops_the_run_and_encoded_one_reaches_the_output(tmp_path):
    (tmp_path / "d.csv").write_text(CAT_CSV)
    base = '[input]\npaths = ["d.csv"]\nfeatures = ["a"]\nlabel = "y"\ncategorical = ["color"]\n'
    bad = write_config(tmp_path / "bad.toml", base + '[[standardize]]\nsteps = [{ op = "scale" }]\n'
                                                     '[output]\npath = "out"\n')
    proc = mpirun(2, ["run", bad, "--quiet"], cwd=tmp_path, check=False, timeout=60)
    assert proc.returncode == 2 and len(error_lines(proc)) == 1, proc.stderr
    assert "'color' would not reach the output" in proc.stderr
    assert no_output_left(tmp_path)
    good = write_config(tmp_path / "good.toml",
                        base + '[[standardize]]\nsteps = [{ op = "categorical" }]\n'
                               '[output]\npath = "ok"\n')
    mpirun(2, ["run", good, "--quiet"], cwd=tmp_path, timeout=60)
    manifest = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    names = manifest.get("feature_names") or []
    with h5py.File(tmp_path / "ok" / "data.h5") as f:
        names = names or [n.decode() if isinstance(n, bytes) else n for n in f.attrs["feature_names"]]
    assert names == ["a", "color=blue", "color=red"]


# --------------------------------------------------------------------------- item 10

def write_bad_files(folder):
    """Three files, bad records in every third of each (so every input rank sees some).

    The first bad record of the input is file 0, line 5 (a wrong field count);
    rank 0's chunks hold it, and later chunks hold other bad records.
    """
    for f in range(3):
        lines = ["a,b,y"]
        for i in range(300):
            if (f, i) == (0, 3):
                lines.append("1,2,3,4")
            elif i % 100 == 50:
                lines.append(f"{i},oops,1")
            else:
                lines.append(f"{i},{i * 0.5},{i % 2}")
        (folder / f"in{f}.csv").write_text("\n".join(lines) + "\n")


BAD_CONFIG = """\
[input]
paths = ["in*.csv"]
features = ["a", "b"]
label = "y"
chunk_rows = 40
on_bad_row = "error"
[[standardize]]
steps = [{ op = "scale" }]
[output]
path = "out"
"""


def test_on_bad_row_error_names_the_first_bad_record_at_every_rank_count_and_layout(tmp_path):
    write_bad_files(tmp_path)
    cfg = write_config(tmp_path / "c.toml", BAD_CONFIG)
    runs = {"n1": (1, []), "n2": (2, []), "n3": (3, []),
            "layered": (3, ["layout.fused=false", "layout.input=1", "layout.standardize=[1]",
                            "layout.sample=[1]"])}
    messages = {}
    for name, (n, sets) in runs.items():
        proc = mpirun(n, ["run", cfg, "--quiet"] + [f"--set={s}" for s in sets], cwd=tmp_path,
                      check=False, timeout=90)
        assert proc.returncode == 2, (name, proc.stderr)
        errs = error_lines(proc)
        assert len(errs) == 1, (name, errs)
        messages[name] = errs[0]
        assert no_output_left(tmp_path), name
    assert len(set(messages.values())) == 1, messages
    msg = messages["n1"]
    assert "in0.csv, line 5: wrong number of fields (the header has 3): '1,2,3,4'" in msg
    assert "first bad record in file order" in msg


def test_quoted_newline_with_drop_names_the_first_in_file_order(tmp_path):
    for f in range(3):   # a quoted newline in every file: each input rank reads one
        lines = ["a,c"] + [f"{i},x" for i in range(100)]
        lines[20 + f] = f'{f},"open'
        (tmp_path / f"in{f}.csv").write_text("\n".join(lines) + "\n")
    cfg = write_config(tmp_path / "c.toml", '[input]\npaths = ["in*.csv"]\nfeatures = ["a"]\n'
                                            'chunk_rows = 30\n[output]\npath = "out"\n')
    proc = mpirun(3, ["run", cfg, "--quiet"], cwd=tmp_path, check=False, timeout=90)
    assert proc.returncode == 2, proc.stderr
    errs = error_lines(proc)
    assert len(errs) == 1 and "in0.csv, line 21: a quoted field contains a newline" in errs[0], errs
    assert no_output_left(tmp_path)


def test_first_bad_record_of_a_range_in_file_order(tmp_path):
    p = tmp_path / "q.csv"
    p.write_bytes(b'a,c\n1,x\n2,"open\n3,y\nz,w\n')
    header, start = read_header(p)
    size = p.stat().st_size
    rec = first_bad_record(p, start, size, header=header, features=["a"], categorical=["c"])
    assert rec.line == 1 and "quoted" in rec.reason and rec.raw == b'2,"open'
    with pytest.raises(QuotedNewlineError):   # the plain parse raises at that line
        from hpcprep.io.csv_parse import parse_range
        parse_range(p, start, size, header=header, features=["a"], first_line=2)
    assert open_quote_line(p, start, size) == 1
    p.write_bytes(b'a,c\n1\n2,"open\n')
    rec = first_bad_record(p, *read_header(p)[1:], p.stat().st_size, header=["a", "c"],
                           features=["a"])
    assert rec.line == 0 and rec.reason.startswith("wrong number of fields") and rec.raw == b"1"


# --------------------------------------------------------------------------- item 12

def write_dropped_files(folder):
    """Two files with known bad lines: {(file, line): reason} and the raw text of each."""
    bad = {}
    for f in range(2):
        lines = [b"a,b,y"]
        for i in range(200):
            n = len(lines) + 1
            if i % 20 == 7:
                lines.append(b"1,2")
                bad[(f, n)] = ("malformed line: wrong number of fields", b"1,2")
            elif i % 31 == 4:
                raw = f"{i},b{i}".encode() + b"," + b"9" * 1500
                lines.append(raw)
                bad[(f, n)] = ("malformed line: unparsable number", raw)
            elif (f, i) == (1, 100):
                lines.append(b"\xff\xfe,1,1")
                bad[(f, n)] = ("malformed line: bytes that are not valid UTF-8", b"\xff\xfe,1,1")
            else:
                lines.append(f"{i},{i / 7:.5f},{i % 2}".encode())
        (folder / f"in{f}.csv").write_bytes(b"\n".join(lines) + b"\n")
    return bad


DROP_CONFIG = """\
[input]
paths = ["in*.csv"]
features = ["a", "b"]
label = "y"
chunk_rows = 30
rejects = true
[output]
path = "out"
"""


@pytest.fixture(scope="module")
def dropped_runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("dropped")
    bad = write_dropped_files(work)
    cfg = write_config(work / "c.toml", DROP_CONFIG)
    for n in (1, 3):
        mpirun(n, ["run", cfg, "--quiet", f"--set=output.path=n{n}"], cwd=work, timeout=90)
    mpirun(2, ["run", cfg, "--quiet", "--set=output.path=layer", "--set=input.rejects=false",
               "--set=standardize=[{steps = [{op = \"dropna\"}], rejects = true}]"], cwd=work,
           timeout=90)
    mpirun(2, ["run", cfg, "--quiet", "--set=output.path=plain", "--set=input.rejects=false"],
           cwd=work, timeout=90)
    return work, bad


def test_report_lists_the_first_bad_lines_of_each_file_and_reason(dropped_runs):
    work, bad = dropped_runs
    reports = {n: json.loads((work / n / "report.json").read_text()) for n in ("n1", "n3", "plain")}
    listed = reports["plain"]["input"]["bad_records"]
    assert listed == reports["n1"]["input"]["bad_records"] == reports["n3"]["input"]["bad_records"]
    expect = []
    for f in range(2):
        for reason in sorted({r for (g, _), (r, _) in bad.items() if g == f}):
            lines = sorted(n for (g, n), (r, _) in bad.items() if g == f and r == reason)[:5]
            expect += [(f, n) for n in lines]
    got = [(int(r["file"].endswith("in1.csv")), r["line"]) for r in listed]
    assert got == sorted(expect)
    for r in listed:
        f = int(r["file"].endswith("in1.csv"))
        reason, raw = bad[(f, r["line"])]
        assert r["reason"] == reason
        assert r["text"] == raw.decode("utf-8", "backslashreplace")[:200]
        assert r["column"] == ("b" if "unparsable" in reason else "")
    assert sum(reports["plain"]["input"]["dropped"].values()) == len(bad)
    assert not (work / "plain" / "rejects.h5").exists()


@pytest.mark.parametrize("name", ["n1", "n3", "layer"])
def test_rejects_file_has_every_dropped_line_with_file_line_reason_and_text(dropped_runs, name):
    work, bad = dropped_runs
    with h5py.File(work / name / "rejects.h5") as f:
        g = f["input"]
        files = [int(s.endswith("in1.csv")) for s in g["file"].asstr()[()]]
        got = {(fi, int(n)): (r, t) for fi, n, r, t in
               zip(files, g["line"][()], g["reason"].asstr()[()], g["text"].asstr()[()])}
        ids = g["ids"][()]
        assert np.all(np.diff(ids) > 0)
        assert list(g["column"].asstr()[()]).count("b") == sum("unparsable" in r for r, _ in bad.values())
        flat_input = f["step"].asstr()[()] == "input"
        assert np.array_equal(np.sort(f["ids"][()][flat_input]), ids)
        counts = json.loads(f.attrs["counts"])
    assert set(got) == set(bad)
    for key, (reason, raw) in bad.items():
        assert got[key][0] == reason
        assert got[key][1] == raw[:1024].decode("utf-8", "backslashreplace")
    assert sum(counts["input"].values()) == len(bad)
    # ids are positions in the ordered input: file 0 has 200 records, header excluded
    assert sorted(ids.tolist()) == sorted(200 * fi + n - 2 for fi, n in bad)


def test_rejects_file_is_the_same_for_every_layout(dropped_runs):
    work, _ = dropped_runs
    with h5py.File(work / "n1" / "rejects.h5") as a, h5py.File(work / "n3" / "rejects.h5") as b:
        for k in ("ids", "line", "reason", "file", "column", "text"):
            assert np.array_equal(a["input"][k][()], b["input"][k][()]), k
