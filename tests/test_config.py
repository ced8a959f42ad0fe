"""Config parsing and validation, in-process."""

import pytest

import pickle
from dataclasses import FrozenInstanceError, fields

from hpcprep.config import (EXTRA_SECTIONS, SECTIONS, TOP, RunConfig, apply_overrides, parse_config,
                            parse_override, parse_size)
from hpcprep.errors import ConfigError

MINIMAL = '[input]\npaths = ["raw/*.h5"]\n'


def parse(text=MINIMAL, overrides=(), world=1):
    return parse_config(text, "test.toml", overrides, world, base_dir="/data")


def test_defaults_are_filled_and_paths_resolved():
    cfg = parse()
    assert cfg.layout.fused is True
    assert cfg.sample == [{"op": "shuffle"}]
    assert cfg.input.chunk_rows == 262144
    assert cfg.input.paths == ["/data/raw/*.h5"]
    assert cfg.output.path == "/data/out"
    assert cfg.resources.memory_bytes == 2 * 1024**3


def test_the_config_is_typed_frozen_and_crosses_ranks():
    """Sections are frozen dataclasses whose fields are the TOML keys of their specs; the whole
    config pickles (rank 0 broadcasts it) to an equal one."""
    cfg = parse(MINIMAL + "[[standardize]]\nsteps = [{ op = 'dropna' }]\n", ["seed=3"])
    assert isinstance(cfg, RunConfig)
    assert [f.name for f in fields(RunConfig)] == [*TOP, *EXTRA_SECTIONS, "text", "world_size"]
    for name, (spec, cls) in SECTIONS.items():
        section = getattr(cfg, name)
        assert type(section) is cls and [f.name for f in fields(cls)][:len(spec)] == list(spec)
    assert cfg.resources.memory_bytes == 2 * 1024**3 and cfg.world_size == 1
    assert cfg.standardize == [{"steps": [{"op": "dropna"}], "rejects": False}]
    with pytest.raises(FrozenInstanceError):
        cfg.seed = 4
    with pytest.raises(FrozenInstanceError):
        cfg.input.chunk_rows = 5
    assert pickle.loads(pickle.dumps(cfg)) == cfg


@pytest.mark.parametrize("text, needle", [
    ("bogus = 1\n" + MINIMAL, "unknown key bogus"),
    (MINIMAL + "bogus = 1\n", "unknown key input.bogus"),
    (MINIMAL + "[output]\npath = 'o'\nfancy = true\n", "unknown key output.fancy"),
    (MINIMAL + "[layout]\nfused = 'yes'\n", "layout.fused = 'yes': expected a boolean"),
    (MINIMAL.replace("]\n", "]\nformat = 'xls'\n", 1), "input.format = 'xls': expected one of"),
    (MINIMAL + "[[standardize]]\nsteps = [{ op = 'nosuch' }]\n", "standardize[0].steps[0].op = 'nosuch'"),
    (MINIMAL + "[[standardize]]\nsteps = [{ op = 'scale', method = 'weird' }]\n",
     "standardize[0].steps[0].method = 'weird'"),
    (MINIMAL + "[[sample]]\nop = 'nosuch'\n", "sample[0].op = 'nosuch'"),
    (MINIMAL + "[resources]\nmemory_per_rank = 'lots'\n", "not a size"),
    ("[input]\n", "missing key input.paths"),
    ("seed = \n", "not valid TOML"),
])
def test_bad_config_names_the_key(text, needle):
    with pytest.raises(ConfigError, match=None) as info:
        parse(text)
    assert needle in str(info.value)


def test_layered_layout_must_fit_the_world():
    text = MINIMAL + "[[standardize]]\nsteps = []\n[layout]\nfused = false\ninput = 1\nstandardize = [1]\nsample = [2]\n"
    assert parse(text, world=4).layout.sample == [2]
    with pytest.raises(ConfigError, match="layout: input \\+ standardize \\+ sample = 4 ranks, but the job has 3"):
        parse(text, world=3)
    with pytest.raises(ConfigError, match="one by one"):
        parse(text.replace("standardize = [1]", "standardize = [2]"), world=5)


def test_overrides():
    assert parse_override("layout.fused=false") == (["layout", "fused"], False)
    assert parse_override("layout.sample=[2, 2]") == (["layout", "sample"], [2, 2])
    assert parse_override("output.path=some/dir") == (["output", "path"], "some/dir")
    assert parse_override('output.path="x y"') == (["output", "path"], "x y")
    raw = apply_overrides({"sample": [{"op": "shuffle"}]}, ["seed=3", "sample.0.op=shuffle"])
    assert raw["seed"] == 3
    cfg = parse(MINIMAL, ["seed=9", "input.chunk_rows=10"])
    assert cfg.seed == 9 and cfg.input.chunk_rows == 10
    assert "--set seed=9" in cfg.text
    with pytest.raises(ConfigError, match="expected key=value"):
        parse(MINIMAL, ["seed"])
    with pytest.raises(ConfigError, match="input.chunk_rows = 0: must be > 0"):
        parse(MINIMAL, ["input.chunk_rows=0"])


def test_sizes():
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size("512 MB") == 512 * 10**6
    assert parse_size(1000) == 1000
    with pytest.raises(ValueError):
        parse_size("2 parsecs")
