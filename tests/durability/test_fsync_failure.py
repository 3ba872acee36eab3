"""A failed fdatasync, for real: fsync_fault.c (an LD_PRELOAD shim this file compiles) makes
fsync/fdatasync of chosen segment files fail with EIO and, as Linux may, drops what the file
gained since its last good sync (overwritten with zeros), so a later successful sync does not
bring it back (fsyncgate).

The shim is armed through a control file ("<count> <glob>") and reaches the persister through
the environment the broker's processes inherit (LD_PRELOAD). Skipped, with the reason, where
the shim cannot be built or loaded (no C compiler, a Python that ignores LD_PRELOAD).
"""
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner

import shmlog
from shmlog import KafkaError
from shmlog.cli.app import cli

from .conftest import create_topic, partition_dir, produce, read_all

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RECORD = b"r" * 200


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    """Path of the compiled shim; skips the module where it cannot be built or does not load."""
    out = tmp_path_factory.mktemp("fsync-fault")
    lib = out / "fsync_fault.so"
    try:
        done = subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(lib), os.path.join(HERE, "fsync_fault.c"),
                               "-ldl"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot compile the fsync fault shim: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot compile the fsync fault shim: {done.stderr.strip()}")
    probe_file, control = out / "probe.log", out / "probe-control"
    probe_file.write_bytes(b"x")
    control.write_text(f"1 {probe_file}\n")
    check = subprocess.run(
        [sys.executable, "-c", "import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY)\n"
         "try:\n    os.fdatasync(fd)\nexcept OSError as e:\n    print(e.errno)\nelse:\n    print(0)", str(probe_file)],
        env={**os.environ, "LD_PRELOAD": str(lib), "SHMLOG_TEST_FSYNC_CONTROL": str(control)},
        capture_output=True, text=True, timeout=60)
    if check.stdout.strip() != "5":
        pytest.skip(f"LD_PRELOAD does not reach os.fdatasync here (probe printed {check.stdout.strip()!r}, "
                    f"{check.stderr.strip()!r})")
    return str(lib)


@pytest.fixture
def faults(shim, tmp_path, monkeypatch):
    """Arm the shim for every process started from now on: faults.arm(count, glob); faults.injected()."""
    control, log = tmp_path / "fsync-control", tmp_path / "fsync-injected"
    control.write_text("0 *\n")
    monkeypatch.setenv("LD_PRELOAD", shim)
    monkeypatch.setenv("SHMLOG_TEST_FSYNC_CONTROL", str(control))
    monkeypatch.setenv("SHMLOG_TEST_FSYNC_LOG", str(log))

    class Faults:
        @staticmethod
        def arm(count, glob):
            control.write_text(f"{count} {glob}\n")

        @staticmethod
        def injected():
            return log.read_text().splitlines() if log.exists() else []

    return Faults


def captured_until(capfd, text, timeout=30.0):
    """What the broker wrote to stderr (forwarded by shmlog.Broker), once it contains `text`."""
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        seen += capfd.readouterr().err
        time.sleep(0.05)
    return seen


def produce_rounds(conf, rounds, per_round, start, during=None):
    """acks=all, `per_round` records then flush, `rounds` times; during(round) runs before each
    round. Returns the delivery reports [(error, offset, value)]."""
    p = shmlog.Producer({**conf, "acks": "all", "linger.ms": 1, "batch.size": 16384})
    reports = []
    try:
        for r in range(rounds):
            if during is not None:
                during(r)
            for i in range(per_round):
                n = start + r * per_round + i
                p.produce("t", b"%06d|" % n + RECORD,
                          on_delivery=lambda err, msg: reports.append((err, msg.offset(), msg.value())))
            assert p.flush(30) == 0
    finally:
        p.close()
    return reports


def verify_log(data_dir):
    return CliRunner().invoke(cli, ["verify-log", "--data-dir", data_dir])


def test_a_writer_whose_fdatasync_failed_never_flushes_past_it_until_the_failed_bytes_are_written_again(
        faults, tmp_path):
    """The writer's rule, in a process of its own with the shim loaded: after a failed sync,
    flush() keeps failing (though the disk would now accept a sync) and flushed_offset stays,
    until discard_from() cut the suspect bytes; a new segment then takes them."""
    pdir = tmp_path / "p-0"
    control = os.environ["SHMLOG_TEST_FSYNC_CONTROL"]
    script = textwrap.dedent(f"""
        import json, os
        from tests.unit.test_segment import make_batch
        from shmlog.log.segment import SegmentWriter, SyncFailed, list_segments
        w = SegmentWriter({str(pdir)!r}, 1 << 20)
        w.append(make_batch(0, 10), 0, 10)
        out = {{"first": w.flush()}}
        w.append(make_batch(10, 10), 10, 20)
        open({control!r}, "w").write("1 */p-0/*.log\\n")
        errors = []
        for _ in range(2):
            try:
                w.flush()
            except SyncFailed as exc:
                errors.append(exc.errno)
        out["errors"], out["flushed_after_failure"] = errors, w.flushed_offset
        try:
            w.append(make_batch(20, 5), 20, 25)
        except SyncFailed:
            out["append_refused"] = True
        w.discard_from(10)
        w.append(make_batch(10, 10), 10, 20)
        out["flushed_after_rewrite"] = w.flush()
        out["segments"] = list_segments({str(pdir)!r})
        out["first_size"] = os.path.getsize(os.path.join({str(pdir)!r}, "%020d.log" % 0))
        out["first_batch_bytes"] = len(make_batch(0, 10))
        w.close()
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr
    import json
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["first"] == 10
    assert out["errors"] == [5, 5], "a sync after the failed one must not count"
    assert out["flushed_after_failure"] == 10
    assert out["append_refused"]
    assert out["flushed_after_rewrite"] == 20
    assert out["segments"] == [0, 10], "the rewritten offsets go into a new segment"
    assert out["first_size"] == out["first_batch_bytes"], "the old segment is cut where its last good sync ended"
    assert len(faults.injected()) == 1


def test_one_failed_fdatasync_under_acks_all_load_loses_no_acknowledged_record(
        faults, data_dir, start_broker, capfd):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", ring_bytes=4 << 20, segment_bytes=64 << 10)
    pdir = partition_dir(data_dir, "t")

    def during(r):
        if r == 8:
            faults.arm(1, os.path.join(pdir, "*.log"))

    reports = produce_rounds(conf, 30, 40, 0, during)
    assert len(faults.injected()) == 1, "the armed failure was not hit"
    acked = {offset: value for e, offset, value in reports if e is None}
    err = captured_until(capfd, "again into", timeout=5)
    broker.stop()

    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    got = {offset: value for _, offset, value in read_all(conf, "t")}
    missing = sorted(o for o in acked if got.get(o) != acked[o])
    assert not missing, f"acknowledged offsets missing or different after restart: {missing[:10]}"
    broker.stop()
    result = verify_log(data_dir)   # every batch's CRC32C, dense offsets, indexes
    assert result.exit_code == 0, result.output
    # The failed range went into a new segment, and nobody saw an error.
    assert re.search(r"fdatasync of .*\.log failed: EIO", err), err
    match = re.search(r"wrote offsets (\d+)\.\.(\d+) again into (\S+) and fdatasync'ed it", err)
    assert match, err
    assert os.path.basename(match.group(3)) == f"{int(match.group(1)):020d}.log", "not a new segment"
    assert len(acked) == len(reports), [e for e, *_ in reports if e is not None][:3]


def test_persistent_fdatasync_failure_fails_the_log_dir_in_one_line_and_acks_all_gets_storage_errors(
        faults, data_dir, start_broker, capfd):
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", ring_bytes=4 << 20)
    pdir = partition_dir(data_dir, "t")
    before = produce_rounds(conf, 3, 20, 0)
    assert all(e is None for e, *_ in before)

    faults.arm(-1, os.path.join(pdir, "*.log"))
    after = produce_rounds(conf, 2, 20, 60)
    codes = {e.code() if e is not None else None for e, *_ in after}
    assert codes == {KafkaError.KAFKA_STORAGE_ERROR}, "a record was acknowledged although no sync succeeded"
    err = captured_until(capfd, "KAFKA_STORAGE_ERROR and unwritten")
    lines = [line for line in err.splitlines() if "log dir" in line and "failed with" in line]
    assert len(lines) == 1, err
    assert f"log dir {os.path.join(os.path.realpath(data_dir), 'logs')} failed with EIO" in lines[0]
    faults.arm(0, "*")
    broker.stop()

    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    got = {offset: value for _, offset, value in read_all(conf, "t")}
    assert all(got.get(offset) == value for _, offset, value in before), "an acknowledged record is missing"


def test_a_failed_fdatasync_of_a_segment_the_log_rolls_past_is_written_again_with_nothing_lost(
        faults, data_dir, start_broker, capfd):
    """acks=1 without a flush policy: the only syncs are those sealing a segment when the log
    rolls. The first one fails; what the segment held since the last good sync is written
    again from the ring, and a later acks=all record is acknowledged only after that."""
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", ring_bytes=4 << 20, segment_bytes=16 << 10)
    faults.arm(1, os.path.join(partition_dir(data_dir, "t"), "00000000000000000000.log"))
    values = [b"%06d|" % i + RECORD for i in range(300)]
    first = produce(conf, "t", values, acks=1, batch_size=2048)
    last = produce(conf, "t", [b"durable"], acks="all")
    assert all(e is None for e, *_ in first + last)
    assert len(faults.injected()) == 1, "the armed failure was not hit"
    err = captured_until(capfd, "new segment")
    broker.stop()

    result = verify_log(data_dir)
    assert result.exit_code == 0, result.output
    broker = start_broker()
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    got = [value for _, _, value in read_all(conf, "t")]
    assert got == values + [b"durable"]
    assert re.search(r"offsets 0\.\.\d+ written to \S+ since the last good fdatasync may be lost: writing them "
                     r"again from the ring into a new segment", err), err
