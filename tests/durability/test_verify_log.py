"""Damage to older segments, on real files: what the broker's start reports (cheap checks:
first and last batches, indexes, segments ending where the next begins) and what
`shmlog verify-log` finds (every batch's CRC32C, dense offsets, every index entry).

Each test writes a partition of several segments through a real broker, stops it, damages
the files, then runs verify-log and/or starts the broker again.
"""
import os
import re
import threading
import time

import pytest
from click.testing import CliRunner

import shmlog
from shmlog.cli.app import cli
from shmlog.log import segment
from shmlog.log.batch import HEADER_BYTES

from .conftest import create_topic, partition_dir, produce, read_all, segment_bases, wait_recovered

N = 300
VALUE = b"v" * 150


def verify_log(data_dir, *args):
    return CliRunner().invoke(cli, ["verify-log", "--data-dir", data_dir, *args])


@pytest.fixture
def written(data_dir, start_broker):
    """A stopped broker's data dir holding topic t (partition 0) in at least four segments:
    (partition dir, segment base offsets, {offset: value})."""
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", segment_bytes=8192)
    reports = produce(conf, "t", [b"%05d|" % i + VALUE for i in range(N)], batch_size=1024, linger_ms=0)
    assert all(err is None for err, *_ in reports)
    broker.stop()
    pdir = partition_dir(data_dir, "t")
    bases = segment_bases(pdir)
    assert len(bases) >= 4, bases
    return pdir, bases, {offset: value for _, _, offset, value in reports}


def started_saying(start_broker, capfd, text, timeout=30.0):
    """Start the broker again; (conf, what it wrote to stderr) once `text` appeared there."""
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    wait_recovered(conf, "t")
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        seen += capfd.readouterr().err   # forwarded by shmlog.Broker from the broker's stderr
        time.sleep(0.05)
    assert text in seen, seen
    return conf, seen


def test_verify_log_passes_a_healthy_partition_and_summarises_what_it_checked(written, data_dir):
    result = verify_log(data_dir)
    assert result.exit_code == 0, result.output
    assert re.search(rf"verify-log: 1 partition, {len(written[1])} segments, \d+ batches, \d+ bytes checked; "
                     r"0 problems", result.output), result.output


def test_verify_log_names_a_flipped_byte_in_an_older_segment_with_its_byte_position_and_offsets(written, data_dir):
    pdir, bases, _ = written
    path = segment.segment_path(pdir, bases[1])
    mapped, starts = segment._Mapped.of_path(path), []
    segment._walk(mapped, bases[1], True, lambda pos, *_: starts.append(pos))
    mapped.close()
    flip = starts[len(starts) // 2] + HEADER_BYTES + 5   # inside a record, which the CRC32C covers
    with open(path, "r+b") as f:
        f.seek(flip)
        byte = f.read(1)
        f.seek(flip)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = verify_log(data_dir, "--topic", "t", "--partition", "0")
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if "CRC32C mismatch" in line]
    assert len(lines) == 1, result.output
    match = re.match(rf"{re.escape(path)}: byte (\d+): offsets (\d+)\.\.(\d+): CRC32C mismatch", lines[0])
    assert match, lines[0]
    assert int(match.group(1)) == starts[len(starts) // 2] and bases[1] <= int(match.group(2)) < bases[2]
    assert "1 problem" in result.output.splitlines()[-1]


def test_a_deleted_middle_segment_is_named_by_verify_log_and_reported_at_start_and_readers_skip_it(
        written, data_dir, start_broker, capfd):
    pdir, bases, values = written
    segment._unlink_segment(pdir, bases[2])
    gap = f"offsets {bases[2]}..{bases[3] - 1}"
    result = verify_log(data_dir)
    assert result.exit_code == 1, result.output
    assert f"{pdir}: {gap}: in no segment" in result.output, result.output

    conf, err = started_saying(start_broker, capfd, "DAMAGED LOG")
    assert re.search(rf"t-0: DAMAGED LOG: {re.escape(pdir)}: {gap} are in no segment", err), err
    got = {offset: value for _, offset, value in read_all(conf, "t")}
    assert got == {o: v for o, v in values.items() if not bases[2] <= o < bases[3]}


def test_a_truncated_older_segment_is_named_by_verify_log_and_reported_at_start_and_the_rest_is_served(
        written, data_dir, start_broker, capfd):
    pdir, bases, values = written
    path = segment.segment_path(pdir, bases[1])
    size = os.path.getsize(path)
    os.truncate(path, size - 10)   # the last batch loses its end
    result = verify_log(data_dir)
    assert result.exit_code == 1, result.output
    assert re.search(rf"{re.escape(path)}: byte \d+ of {size - 10}: offsets \d+\.\.{bases[2] - 1}: torn batch",
                     result.output), result.output

    conf, err = started_saying(start_broker, capfd, "DAMAGED LOG")
    assert re.search(rf"t-0: DAMAGED LOG: {re.escape(path)}: torn batch .* at byte \d+ of {size - 10}; "
                     rf"offsets \d+\.\.{bases[2] - 1} cannot be read", err), err
    got = {offset: value for _, offset, value in read_all(conf, "t", start=bases[2])}
    assert got == {o: v for o, v in values.items() if o >= bases[2]}


def test_verify_log_checks_a_running_broker_while_it_writes_without_false_alarms(data_dir, start_broker):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", segment_bytes=8192)
    produce(conf, "t", [VALUE] * 100, batch_size=1024)
    done = threading.Event()
    p = shmlog.Producer({**conf, "acks": 1, "linger.ms": 0})

    def keep_writing():
        while not done.is_set():
            p.produce("t", VALUE)
            p.poll(0)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        results = [verify_log(data_dir) for _ in range(3)]
    finally:
        done.set()
        writer.join()
        p.flush(10)
        p.close()
    for result in results:
        assert result.exit_code == 0, result.output
