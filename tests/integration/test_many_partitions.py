"""Many partitions under a low descriptor limit: a broker started (in a child process) with a
hard RLIMIT_NOFILE far below the four files per partition a writer holds, over two log dirs
with two replicas of each partition. Shared-memory rings hold no descriptor in any process, so
the topic is created and every record produced to every partition is read back; the persister
and the mirror keep only as many partitions' files open as their limit allows
(shmlog/broker/open_files.py: the least recently used are parked), so every replica of every
partition reaches disk and nothing runs out. The broker processes raise their soft limit to the hard one. (Idle CPU and
create time of 100 to 10,000 partitions are a bench, not a test: `shmlog bench-partitions`.)"""
import json
import os
import subprocess
import sys
import textwrap

from shmlog.log import segment

PARTITIONS = 300
HARD_LIMIT = 256

CHILD = textwrap.dedent("""
    import json, resource, sys
    import shmlog
    from shmlog import TopicPartition
    data_dir, partitions, hard = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    out = {}
    log_dirs = ",".join(f"{data_dir}/d{i}" for i in range(2))
    with shmlog.Broker(data_dir, log_dirs=log_dirs) as broker:
        conf = {"bootstrap.servers": broker.bootstrap_servers}
        admin = shmlog.AdminClient(conf)
        admin.create_topics([shmlog.NewTopic("many", partitions, replication_factor=2,
                                             config={"ring.bytes": "65536"})])["many"].result()
        p = shmlog.Producer({**conf, "acks": "1", "linger.ms": 0})
        for i in range(partitions):
            p.produce("many", str(i).encode(), partition=i)
        assert p.flush(60) == 0
        p = shmlog.Producer({**conf, "acks": "all", "linger.ms": 0})   # parked partitions write and fsync again
        for i in range(partitions):
            p.produce("many", str(i).encode(), partition=i)
        assert p.flush(60) == 0
        p = None
        c = shmlog.Consumer({**conf, "group.id": "g", "auto.offset.reset": "earliest"})
        c.assign([TopicPartition("many", i, 0) for i in range(partitions)])
        got = {}
        while sum(map(len, got.values())) < 2 * partitions:
            m = c.poll(30)
            assert m is not None and m.error() is None, m and m.error()
            got.setdefault(m.partition(), []).append(m.value().decode())
        c.close()
        out["read"] = sum(got[i] == [str(i)] * 2 for i in range(partitions))
        import psutil
        procs = psutil.Process(broker.process.pid).children(recursive=True)
        out["soft_limits"] = sorted({proc.rlimit(psutil.RLIMIT_NOFILE)[0] for proc in procs})
        out["procs"] = [(proc.cmdline()[-2:], proc.rlimit(psutil.RLIMIT_NOFILE)[0]) for proc in procs]
        admin.close()
    print(json.dumps(out))
""")


def test_a_broker_with_fewer_descriptors_than_its_partitions_files_writes_every_partition_to_disk(data_dir):
    done = subprocess.run([sys.executable, "-c", CHILD, data_dir, str(PARTITIONS), str(HARD_LIMIT)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["read"] == PARTITIONS                 # every record of every partition, from the rings
    assert out["soft_limits"] == [HARD_LIMIT], out        # raised from 64 to the hard limit
    for log_dir in ("d0", "d1"):   # the leaders' (the persister's) and the followers' (the mirrors')
        on_disk = [segment.log_end_offset(os.path.join(data_dir, log_dir, f"many-{p}")) for p in range(PARTITIONS)]
        assert on_disk == [2] * PARTITIONS, log_dir
    with open(os.path.join(data_dir, "supervisor.log")) as f:
        log = f.read()
    assert "Too many open files" not in log
