"""The calibration read of ``plan.balance = "calibrate"`` times rows it has not read before.

It used to read the same rows again and again: they came from HDF5's chunk cache and the
CPU's caches, and the speeds were about 3x the run's (docs/assign.md "Calibration").
In-process, on a real HDF5 input; what is asserted is which rows were read, never a time.
"""

import os

import pytest

from conftest import BASE_CONFIG
import hpcprep.stages.read as read_stage
from hpcprep.config import parse_config
from hpcprep.io.plan import build_input_plan
from hpcprep.io.readers import ChunkReader


class RecordingReader(ChunkReader):
    """A real reader that notes the (file, start, stop) of every read."""

    reads: list = []

    def read(self, desc):
        RecordingReader.reads.append((desc.path, desc.start, desc.stop))
        return super().read(desc)


@pytest.fixture
def planned(small_raw, tmp_path, monkeypatch):
    os.symlink(small_raw, tmp_path / "raw")
    monkeypatch.chdir(tmp_path)
    cfg = parse_config(BASE_CONFIG.format(chunk_rows=100), "cfg.toml",
                       ["plan.calibration_rows=60"], 3)
    monkeypatch.setattr(read_stage, "ChunkReader", RecordingReader)
    RecordingReader.reads = []
    return cfg, build_input_plan(cfg.input, 3)


def test_calibration_reads_rows_not_read_before_from_the_ranks_first_chunk(planned):
    cfg, plan = planned
    speed = read_stage._calibrate(cfg, plan, 1, min_seconds=0.002)
    reads = RecordingReader.reads
    assert speed > 0 and len(reads) >= 2
    first = plan.chunks_of(1)[0]
    assert reads[0] == (first.path, first.start, first.start + 60)   # the first 60 rows of its first chunk
    n_chunks = len(plan.chunks)   # 30 chunks of 100 rows: distinct rows until every chunk was read
    assert len(set(reads[:n_chunks])) == len(reads[:n_chunks]), reads[:n_chunks]
    assert all(stop - start == 60 for _, start, stop in reads)
