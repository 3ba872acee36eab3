"""What the connect tests share: worker configs, reading a topic whole, waiting on a condition."""
import os
import signal
import time

import shmlog

WAIT_S = 60.0


def worker_props(conf, **extra):
    """A worker config committing after every poll/batch (offset.flush.interval.ms=0), so the
    uncommitted window is one batch, and restarting failed tasks quickly."""
    return {"bootstrap.servers": conf["bootstrap.servers"], "offset.flush.interval.ms": "0",
            "offset.storage.partitions": "3", "task.restart.backoff.ms": "50",
            "task.restart.backoff.max.ms": "500", "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
            **{k.replace("_", "."): str(v) for k, v in extra.items()}}


def read_topic(conf, topic, isolation="read_uncommitted", timeout_s=WAIT_S, count=None, distinct=None):
    """Every record of topic (all partitions) once the high watermarks are reached (and, with count,
    once at least count records, or `distinct` different values, were read)."""
    c = shmlog.Consumer({**conf, "enable.auto.commit": False, "isolation.level": isolation})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        tps = [shmlog.TopicPartition(topic, p, shmlog.OFFSET_BEGINNING) for p in sorted(meta.partitions)]
        c.assign(tps)
        out = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in c.consume(1000, timeout=0.2):
                if m.error() is None:
                    out.append(m)
            highs = {tp.partition: c.get_watermark_offsets(tp)[1] for tp in tps}
            positions = {tp.partition: tp.offset for tp in c.position(tps)}
            at_end = all(positions[p] >= h or h == 0 for p, h in highs.items())
            if at_end and (count is None or len(out) >= count) and \
                    (distinct is None or len({m.value() for m in out}) >= distinct):
                return out
        raise AssertionError(f"{topic}: read {len(out)} records, expected {count or distinct} within {timeout_s} s")
    finally:
        c.close()


def wait_until(condition, what, timeout_s=WAIT_S, every_s=0.02):
    """Poll condition() (a file's lines, a table's rows: things no event announces) until true."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


def kill_task(worker, key):
    """SIGKILL the process of task key=(connector, task_id) and wait until the worker has started
    its replacement (a new pid that runs its task)."""
    pid = worker.task_pids()[key]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: worker.task_pids().get(key) not in (None, pid), f"a replacement of task {key}")
    worker.wait_running()
    return pid


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()
