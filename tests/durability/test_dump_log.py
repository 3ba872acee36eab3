"""`shmlog dump-log`: segment files printed batch by batch and checked, like kafka-dump-log."""
import os

import pytest

from shmlog.cli import main as cli_main
from shmlog.log import index
from shmlog.log.segment import SegmentWriter

from ..unit.test_segment import make_batch, make_timed_batch


@pytest.fixture
def segment_dir(tmp_path):
    pdir = str(tmp_path / "t-0")
    with SegmentWriter(pdir, 1 << 20, index_interval_bytes=1) as writer:
        writer.append(make_timed_batch(0, 2, [1000, 2000]), 0, 2)
        writer.append(make_timed_batch(2, 3, [3000, 3000, 3500]), 2, 5)
    return pdir


def log_path(pdir, base=0):
    return os.path.join(pdir, f"{base:020d}.log")


def test_dump_log_prints_one_line_per_batch_with_offsets_position_timestamp_and_crc_check(segment_dir, capsys):
    assert cli_main(["dump-log", log_path(segment_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Dumping {log_path(segment_dir)}"
    assert lines[1] == "Log starting offset: 0"
    first = make_timed_batch(0, 2, [1000, 2000])
    assert lines[2].startswith("baseOffset: 0 lastOffset: 1 count: 2 ")
    assert " position: 0 CreateTime: 2000 " in lines[2] and lines[2].endswith("isvalid: true")
    assert lines[3].startswith("baseOffset: 2 lastOffset: 4 count: 3 ")
    assert f" position: {len(first)} CreateTime: 3500 " in lines[3]
    assert lines[4] == f"2 batches, {os.path.getsize(log_path(segment_dir))} bytes, next offset 5"


def test_dump_log_print_data_log_prints_every_record_with_its_value(segment_dir, capsys):
    assert cli_main(["dump-log", "--print-data-log", log_path(segment_dir)]) == 0
    records = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [r.split()[2] for r in records] == ["0", "1", "2", "3", "4"]
    assert records[0].startswith("| offset: 0 CreateTime: 1000 keySize: -1 valueSize: 20 ")
    assert records[0].endswith("key: null payload: " + "\\x00" * 20)  # unprintable bytes escaped


def test_dump_log_reports_a_crc_mismatch_and_exits_1(segment_dir, capsys):
    with open(log_path(segment_dir), "r+b") as f:
        f.seek(70)
        f.write(b"\xff")
    assert cli_main(["dump-log", log_path(segment_dir)]) == 1
    out = capsys.readouterr().out
    assert "isvalid: false" in out and "CRC32C mismatch in the batch at position 0 (base offset 0)" in out


def test_dump_log_reports_a_torn_tail_and_exits_1(segment_dir, capsys):
    with open(log_path(segment_dir), "ab") as f:
        f.write(make_batch(5, 1)[:40])
    assert cli_main(["dump-log", log_path(segment_dir)]) == 1
    assert "Found 40 invalid bytes at the end of 00000000000000000000.log" in capsys.readouterr().out


def test_dump_log_prints_and_checks_the_offset_and_time_indexes(segment_dir, capsys):
    assert cli_main(["dump-log", index.offset_index_path(segment_dir, 0), index.time_index_path(segment_dir, 0)]) == 0
    out = capsys.readouterr().out.splitlines()
    first = len(make_timed_batch(0, 2, [1000, 2000]))
    assert out[1:3] == ["offset: 1 position: 0", f"offset: 4 position: {first}"]
    assert "timestamp: 2000 offset: 1" in out and "timestamp: 3500 offset: 4" in out


def test_dump_log_reports_an_index_entry_that_points_nowhere(segment_dir, capsys):
    with open(index.offset_index_path(segment_dir, 0), "r+b") as f:
        f.seek(12)
        f.write((7).to_bytes(4, "big"))
    assert cli_main(["dump-log", index.offset_index_path(segment_dir, 0)]) == 1
    assert "no batch ending at offset 4 starts at position 7" in capsys.readouterr().out
