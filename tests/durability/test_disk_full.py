"""A full disk, for real: the broker's log dir is a small tmpfs this test mounts.

Producers waiting on acks=all get KAFKA_STORAGE_ERROR once the persister cannot write;
nothing acknowledged before is lost; when space returns (the test deletes a filler file)
the persister writes what waited in the ring and acks=all works again. Skipped, with the
reason, where a tmpfs cannot be mounted (mounting needs root or CAP_SYS_ADMIN).
"""
import os
import subprocess

import pytest

import shmlog
from shmlog import KafkaError
from shmlog.client.cluster import Cluster

from .conftest import create_topic, produce, read_all, wait_for

FS_BYTES = 4 << 20
ROOM_BYTES = 256 << 10
RECORD = b"d" * 2048


@pytest.fixture
def small_fs(tmp_path):
    """A FS_BYTES tmpfs mounted for this test (unmounted after the broker stopped)."""
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES},mode=0700", "tmpfs", str(mnt)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs for the disk-full test: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the disk-full test (needs root or CAP_SYS_ADMIN): "
                    f"{done.stderr.strip() or 'mount exited with ' + str(done.returncode)}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], check=True, timeout=60)


def fill_leaving(path, room):
    st = os.statvfs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - room))


def test_a_full_disk_fails_acks_all_with_storage_error_loses_nothing_acknowledged_and_recovers(
        small_fs, data_dir, start_broker):
    broker = start_broker(log_dirs=small_fs)
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(conf, "t", ring_bytes=1 << 20)
    produce(conf, "t", [b"first"])  # the partition directory and segment exist before the disk fills
    filler = os.path.join(small_fs, "filler")
    fill_leaving(filler, ROOM_BYTES)

    p = shmlog.Producer({**conf, "acks": "all", "batch.size": 16384, "linger.ms": 0})
    acked, failed = [b"first"], []

    def on_delivery(err, msg):
        name = msg.value().split(b"|")[0]
        (acked.append(name) if err is None else failed.append((err, name)))

    sent = 0
    while not failed and sent < 4 * ROOM_BYTES // len(RECORD):
        for _ in range(8):
            p.produce("t", b"%06d|" % sent + RECORD, on_delivery=on_delivery)
            sent += 1
        p.flush(30)
    assert failed, f"{sent} records of {len(RECORD)} bytes never filled {ROOM_BYTES} bytes"
    assert {err.code() for err, _ in failed} == {KafkaError.KAFKA_STORAGE_ERROR}
    assert "cannot write to disk" in str(failed[0][0])

    os.unlink(filler)  # space returns
    cluster = Cluster(conf["bootstrap.servers"], "test")
    ring = cluster.ring("t", 0)
    wait_for(lambda: ring.header.persist.storage_error == 0, "the persister to write again")
    cluster.close()
    after = produce(conf, "t", [b"after%d" % i for i in range(20)])
    p.close()

    assert all(err is None for err, *_ in after)
    names = [v.split(b"|")[0] for _, _, v in read_all(conf, "t")]
    assert len(names) == len(set(names)), "a record was written twice"
    assert names[:len(acked)] == acked, "an acknowledged record is missing or out of order"
    # records reported as failed were kept in the ring and written once space returned
    assert names[len(acked):len(acked) + len(failed)] == [name for _, name in failed]
    assert names[len(acked) + len(failed):] == [b"after%d" % i for i in range(20)]
