"""Topic metadata, persisted in the data dir by the supervisor (write, fsync, rename).

meta/topics.json is only ever replaced whole: a new copy is written and fsynced beside it,
the current one becomes meta/topics.json.bak (a hard link, so it is the exact previous
good copy), then the new one is renamed over it. load() checks the shape of what it reads
and falls back to the .bak when topics.json is garbage, empty or the wrong shape.

Each partition directory holds `partition.metadata` (as in Kafka: a version and the topic
id), so a directory left by an earlier topic of the same name is never taken for the
current one's.
"""
import base64
import json
import os
import threading
import time
import uuid

from shmlog.config import TOPIC_DEFAULTS, parse_topic_config
from shmlog.errors import KafkaException, reason_of

PARTITION_METADATA = "partition.metadata"


class MetadataError(Exception):
    """topics.json cannot be used and there is no good previous copy: the broker cannot start."""


def metadata_path(data_dir):
    return os.path.join(data_dir, "meta", "topics.json")


def new_topic_id():
    """A Kafka-style topic id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _int(value, low=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def shape_problem(meta):
    """What is wrong with the shape of a topics.json document, or None."""
    if not isinstance(meta, dict):
        return f"its top level is a JSON {type(meta).__name__}, not an object"
    topics, next_id = meta.get("topics"), meta.get("next_topic_id")
    if not isinstance(topics, dict):
        return '"topics" is missing or not an object'
    if not _int(next_id, 1):
        return '"next_topic_id" is missing or not a positive integer'
    ids = set()
    for name, t in topics.items():
        where = f"topic {name[:60]!r}"
        if not name:
            return "a topic has an empty name"
        if not isinstance(t, dict):
            return f"{where} is not an object"
        if not _int(t.get("id"), 1) or t["id"] >= next_id or t["id"] in ids:
            return f'{where} has no "id", a duplicate one, or one not below "next_topic_id"'
        ids.add(t["id"])
        if not _int(t.get("partitions"), 1):
            return f'{where}: "partitions" is missing or not a positive integer'
        if "topic_id" in t and not (isinstance(t["topic_id"], str) and t["topic_id"]):
            return f'{where}: "topic_id" is not a string'
        if not isinstance(t.get("config"), dict):
            return f'{where}: "config" is missing or not an object'
        try:
            parse_topic_config(t["config"])
        except KafkaException as exc:
            return f"{where}: {reason_of(exc)}"
        problem = _states_problem(t)
        if problem:
            return f"{where}: {problem}"
        starts = t.get("log_start_offsets", {})
        if not isinstance(starts, dict) or not all(_int(v) for v in starts.values()):
            return f'{where}: "log_start_offsets" is not an object of offsets'
    return None


def _states_problem(t):
    """What is wrong with a topic's "partition_states" (shmlog/broker/replicas.py), or None."""
    states = t.get("partition_states")
    if states is None:
        return None
    if not isinstance(states, list) or len(states) > t["partitions"]:
        return '"partition_states" is not a list of at most one entry per partition'
    for p, s in enumerate(states):
        reps = s.get("replicas") if isinstance(s, dict) else None
        if not (isinstance(reps, list) and reps and all(_int(r) for r in reps) and len(set(reps)) == len(reps)):
            return f'partition {p}: "replicas" is not a list of distinct log dir indexes'
        isr = s.get("isr")
        if not (isinstance(isr, list) and all(r in reps for r in isr)):
            return f'partition {p}: "isr" is not a subset of its replicas'
        if s.get("leader") not in reps or not _int(s.get("leader_epoch")):
            return f'partition {p}: "leader" is not one of its replicas, or "leader_epoch" is not an offset'
    return None


def _read(path):
    """(meta, None), (None, why it cannot be used), or (None, None) when the file does not exist."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"it cannot be read ({exc.strerror})"
    if not data.strip():
        return None, f"it is empty ({len(data)} bytes)"
    try:
        meta = json.loads(data)
    except ValueError as exc:  # also bytes that are not UTF-8
        return None, f"it is not JSON ({exc})"
    problem = shape_problem(meta)
    return (None, f"it is not topic metadata: {problem}") if problem else (meta, None)


def load(data_dir, warn=None):
    """The topic metadata of data_dir: topics.json, else its previous good copy (topics.json.bak,
    after moving the damaged file aside and saying so through `warn`), else no topics for a new
    data dir. Raises MetadataError, naming the file and what to do, when neither can be used."""
    path = metadata_path(data_dir)
    meta, problem = _read(path)
    if meta is not None:
        return meta
    bak = path + ".bak"
    if problem is None and not os.path.exists(bak):
        return {"next_topic_id": 1, "topics": {}}  # a new data dir
    problem = problem or "it is missing"
    previous, bak_problem = _read(bak)
    if previous is None:
        raise MetadataError(
            f"{path} cannot be used: {problem}; and there is no good previous copy ({bak}: "
            f"{bak_problem or 'missing'}). Restore {path} from a backup, or move it aside to start with no "
            f"topics (the segment files stay under the log dirs, but a topic created again under an old "
            f"name starts empty and its old directories are removed)")
    aside = None
    if os.path.exists(path):
        aside = f"{path}.damaged-{int(time.time())}"
        os.replace(path, aside)
    save(data_dir, previous)
    if warn is not None:
        warn(f"{path} cannot be used: {problem}; recovered the topic metadata from {bak}, the copy "
             f"written before the last metadata change (a topic created, deleted or altered last may "
             f"need doing again)" + (f"; the damaged file is kept as {aside}" if aside else ""))
    return previous


def save(data_dir, meta):
    path = metadata_path(data_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    # One line: json's C encoder (an indented dump goes through its pure-Python one, ~10x slower:
    # 0.3 s of a 10,000-partition topic's creation).
    data = json.dumps(meta, sort_keys=True)
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(path):
        # The current copy becomes the .bak (a hard link: no bytes copied, no window without one).
        bak_tmp = path + ".bak.tmp"
        try:
            os.unlink(bak_tmp)
        except FileNotFoundError:
            pass
        os.link(path, bak_tmp)
        os.replace(bak_tmp, path + ".bak")
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def topic_config(topic):
    """The effective config of a topic entry: defaults overlaid with what was set."""
    return {**TOPIC_DEFAULTS, **topic["config"]}


# ---------------------------------------------------------------------- partition directories

def partition_topic_id(pdir):
    """The topic id a partition directory's partition.metadata names; None if it has none."""
    try:
        with open(os.path.join(pdir, PARTITION_METADATA)) as f:
            fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        return ""  # unreadable or garbage: names no topic we know
    return fields.get("topic_id", "").strip()


def write_partition_metadata(pdir, topic_id, sync=True):
    """Create pdir if needed and record which topic it belongs to (Kafka's partition.metadata).
    sync=False leaves it to the caller to make many of them durable at once (fsync_all):
    two fsyncs per partition made creating 10,000 partitions take tens of seconds."""
    path = os.path.join(pdir, PARTITION_METADATA)
    text = f"version: 0\ntopic_id: {topic_id}\n".encode()
    if not sync:
        try:
            os.mkdir(pdir)
        except FileExistsError:
            pass
        else:
            # A directory just made: no earlier copy to keep whole, so no temporary file and
            # rename (a torn file is possible only before topics.json names the topic).
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                os.write(fd, text)
            finally:
                os.close(fd)
            return
    os.makedirs(pdir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(text)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if not sync:
        return
    dir_fd = os.open(pdir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


SYNC_THREADS = 64


def _fsync_path(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_all(paths):
    """fsync every file and directory in `paths`, many at once from SYNC_THREADS threads (each
    taking every SYNC_THREADS-th path: a future per path cost more than the fsyncs): the file
    system commits concurrent fsyncs together (one journal commit for many), so making 10,000
    new partition directories durable takes about as long as a few fsyncs in a row, not 20,000
    of them. (Not syncfs(2): it would also wait for every other writer's dirty data on the file
    system.) The first OSError is raised once all are done."""
    paths = list(enumerate(paths))
    errors = []   # (index in paths, OSError)
    go = threading.Event()   # all started first: a busy thread holding the GIL would slow the next start()

    def sync(share):
        go.wait()
        for i, path in share:
            try:
                _fsync_path(path)
            except OSError as exc:
                errors.append((i, exc))

    threads = [threading.Thread(target=sync, args=(paths[k::SYNC_THREADS],), daemon=True)
               for k in range(min(SYNC_THREADS, len(paths)))]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join()
    if errors:
        raise min(errors, key=lambda e: e[0])[1]


# ---------------------------------------------------------------------- cluster id

META_PROPERTIES = "meta.properties"


def cluster_id(data_dir):
    """The data dir's cluster id (Kafka's cluster.id in meta/meta.properties): made on first
    use (22 URL-safe base64 characters, as Kafka's), then the same for the data dir's life."""
    path = os.path.join(data_dir, "meta", META_PROPERTIES)
    try:
        with open(path) as f:
            fields = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
        found = fields.get("cluster.id", "").strip()
        if found:
            return found
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        pass
    new = new_topic_id()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"version=1\ncluster.id={new}\nnode.id=0\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return new
