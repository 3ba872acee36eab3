"""The mirror: copies the leader's log of every partition that has a follower replica on one
log dir into that log dir, byte for byte, and says how far it fsynced.

Run as `python -m shmlog.broker.mirror <data_dir> <log dir index>`; the supervisor starts one
per log dir that holds follower replicas and restarts it when it exits (docs/replication.md).

A follower reads the leader replica's segment files (SegmentReader, what consumers behind
the ring read) and appends the same RecordBatch v2 bytes to its own segments with the
persister's SegmentWriter: one segment format, and the ring never holds bytes back for a
follower (everything a follower needs is in the leader's segments). After each copy it
fdatasyncs and publishes its fsynced log end offset in the ring header's replication line
(its word: the replica's position in the partition's replica list), which wakes the
persister: for a partition with followers the persister publishes as flushed_offset (what
acks=all waits on and consumers read up to) the smallest fsynced offset of the ISR.

A follower whose log is longer than the leader's (it copied what the leader then lost, e.g.
unsynced bytes after a host crash) is cut back to the leader's log end before it copies
anything: no divergent history survives on a follower.
"""
import errno
import fcntl
import logging
import os
import signal
import socket
import sys
import time

from shmlog import control
from shmlog._native import lib
from shmlog._native.ring import Doorbell, Ring
from shmlog.broker import logs, metadata, open_files
from shmlog.broker.breadcrumb import Breadcrumb
from shmlog.broker.persister import settings_for
from shmlog.errors import KafkaError, KafkaException
from shmlog.log import control_record, leader_epoch
from shmlog.log.segment import PartitionBusy, SegmentReader, SegmentWriter, SyncFailed, partition_dir

COPY_MAX_BYTES = 4 << 20      # per partition per round
BUSY_POLL_S = 0.0005          # while an acks=all producer waits for this follower
POLL_S = 0.002                # while records flow
IDLE_POLL_S = 0.02            # nothing moved for a while
IDLE_AFTER_S = 0.1
RETRY_AFTER_ERROR_S = 0.1
RETRY_OPEN_S = 0.5
RETRY_BUSY_S = 0.01
GROUPED = logs.Grouped()      # one line per condition that many partitions hit at once


def log(message, level=logging.WARNING):
    logs.get().log(level, message)


def info(message):
    logs.get().info(message)


class FollowerLog:
    """One follower replica: the leader's segments in, our segments out, our fsynced word."""

    def __init__(self, topic, partition, ring_name, leader_dir, follower_dir, replica, settings, topic_id, bell,
                 log_dir_index):
        self.topic, self.partition = topic, partition
        self.replica = replica    # position in the partition's replica list: our word in the ring header
        self.log_dir_index = log_dir_index   # tags the word: ours, not a late one of a replica moved away
        self.source = (ring_name, leader_dir, follower_dir, replica)
        self.topic_id = topic_id
        self.bell = bell
        self.dir = partition_dir(follower_dir, topic, partition)
        self.leader_dir = partition_dir(leader_dir, topic, partition)
        owner = metadata.partition_topic_id(self.dir)
        if owner != topic_id:
            raise RuntimeError(f"{self.dir} is not topic id {topic_id}'s (its partition.metadata names "
                               f"{owner or 'no topic'}); waiting for the supervisor to claim it")
        self.ring = Ring.open(ring_name, topic, partition, owner=os.geteuid())
        try:
            self.writer = SegmentWriter(self.dir, settings.segment_bytes, settings.segment_ms,
                                        settings.index_interval_bytes, settings.segment_index_bytes,
                                        settings.segment_jitter_ms)
            self.reader = SegmentReader(self.leader_dir)
        except BaseException:
            self.ring.close()
            raise
        self.epochs = leader_epoch.EpochCache(self.dir)
        self.aborted_index_seen = None   # (inode, size, mtime) of the leader's aborted.txnindex we copied
        self.retry_at = 0.0
        self.errno = 0
        self.published = -1
        if self.writer.recovery_report:
            info(f"{self.where()}: follower recovery: {self.writer.recovery_report}")

    def where(self):
        return f"{self.topic}-{self.partition} (replica on {os.path.dirname(self.dir)})"

    def follow(self, source):
        """The leader moved to another replica (a failover): read its segments from now on. Our
        own log stays open (no second recovery of it: the new leader is waiting for our fsync),
        and start() cuts what the new leader's history lacks."""
        reader = SegmentReader(partition_dir(source[1], self.topic, self.partition))
        self.reader.close()
        self.reader, self.source, self.leader_dir = reader, source, reader.partition_dir
        self.aborted_index_seen = None
        self.start()

    def start(self):
        """Cut what the leader does not have (past its log end, or past where the leader's
        history of our newest leader epoch ends), make what a crashed run left durable, say so."""
        leader_end = self.ring.end()[1]
        cut = leader_epoch.divergence(self.epochs.entries, leader_epoch.read(self.leader_dir), leader_end)
        target = leader_end if cut is None else min(cut, leader_end)
        if self.writer.log_end_offset > target:
            what = "log" if target == leader_end else f"history of leader epoch {self.epochs.latest}"
            log(f"{self.where()}: follower log ends at {self.writer.log_end_offset}, past {target} where the "
                f"leader's {what} ends: cutting it back to {target} (a follower never keeps history the leader lacks)")
            self.writer.discard_from(target)
            self.epochs.truncate_to(target)
        self._copy_aborted_index()   # entries of a history we cut go with it
        self.writer.flush()
        self.publish()

    def publish(self):
        fsynced = self.writer.flushed_offset
        if fsynced != self.published:
            lib.shmlog_ring_publish_replica_fsynced(self.ring.map, self.replica, self.log_dir_index, fsynced,
                                                    self.bell.ptr)
            self.published = fsynced

    def waited_for(self):
        """An acks=all producer waits on offsets we have not fsynced."""
        persist = self.ring.header.persist
        return bool(persist.persist_waiters or persist.flush_requested_offset > self.writer.flushed_offset)

    def pump(self, now):
        """Copy what the leader's segments hold past our log end, fdatasync, publish: True if moved."""
        if now < self.retry_at:
            return False
        try:
            moved = self._copy()
            if moved:
                self.writer.flush()
            self.publish()
        except SyncFailed as exc:
            # What was written since the last good sync may be lost: cut it and copy it again.
            self._failed(exc, now)
            try:
                self.writer.discard_from(self.writer.flushed_offset)
            except OSError:
                pass
            return False
        except OSError as exc:
            self._failed(exc, now)
            return False
        except KafkaException as exc:
            self._failed(OSError(errno.EIO, str(exc)), now)
            # The leader's segment was damaged where we read (a new leader's log before its
            # persister's recovery cut it): a reader keeps what it found, so read it afresh.
            try:
                reader = SegmentReader(self.leader_dir)
                self.reader.close()
                self.reader = reader
            except OSError:
                pass
            return False
        if self.errno:
            info(f"{self.where()}: writing again after {errno.errorcode.get(self.errno, self.errno)}")
            self.errno = 0
        return moved

    def _copy(self):
        end = self.writer.log_end_offset
        start = self.ring.log_start_offset
        if end < start:
            end = start   # retention removed what we lack: the follower's log continues at the leader's start
        try:
            buf, frames = self.reader.read(end, COPY_MAX_BYTES)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.OFFSET_OUT_OF_RANGE:
                raise
            return False
        if not frames:
            return False
        # After reading the batches: an ABORT marker among them had its aborted.txnindex entry
        # written (and fsynced) before it was appended, so the entry is copied before the marker
        # is, and a follower that fsynced a marker holds its entry when it comes to lead.
        self._copy_aborted_index()
        first_pos, base = frames[0][0], frames[0][1]
        last_pos, last_base, last_count, last_bytes = frames[-1]
        self.writer.append(buf[first_pos:last_pos + last_bytes], base, last_base + last_count)
        if leader_epoch.batch_epoch(buf, last_pos) > self.epochs.latest:
            self.epochs.note(buf, [(f[0], f[1]) for f in frames])
        self._apply_log_start(start)
        return True

    def _copy_aborted_index(self):
        try:
            st = os.stat(control_record.index_path(self.leader_dir))
            seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            seen = ()
        if seen != self.aborted_index_seen:
            control_record.copy_index(self.leader_dir, self.dir)
            self.aborted_index_seen = seen

    def _apply_log_start(self, start):
        """Segments wholly below the leader's log start offset go here too."""
        segments = self.writer.segments()
        count = sum(1 for base, seg_end, _, _ in segments[:-1] if seg_end <= start)
        if count:
            self.writer.delete_oldest(count)

    def _failed(self, exc, now):
        code = exc.errno or errno.EIO
        if code != self.errno:
            GROUPED.add(("write", code), self.where(),
                        f"{self.where()}: cannot write the follower replica: {exc}; retrying every "
                        f"{int(RETRY_AFTER_ERROR_S * 1000)} ms (the replica leaves the ISR if this lasts "
                        f"replica.lag.time.max.ms)")
        self.errno = code
        self.retry_at = now + RETRY_AFTER_ERROR_S

    def park(self):
        """Give up our log's files while idle (open_files.py; every copy is flushed at once)."""
        return self.writer.park()

    def close(self):
        self.reader.close()
        self.writer.close()
        self.ring.close()


class Mirror:
    def __init__(self, data_dir, index):
        self.data_dir = os.path.realpath(data_dir)
        self.index = index
        self.control = control.Control(self.data_dir, register_as="mirror")
        self.followers = {}
        self.unopened = {}
        self.bell = None
        self.epoch = None
        self.stopping = False
        self.breadcrumb = Breadcrumb(self.data_dir, f"mirror-{index}")   # for the supervisor, should we die
        self.files = open_files.OpenFiles(open_files.limit_from_rlimit())

    def refresh_metadata(self):
        meta = self.control.request("metadata")
        if self.bell is None or self.bell.mapping.name != meta["doorbell"]:
            if self.bell is not None:
                self.bell.close()
            self.bell = Doorbell.open(meta["doorbell"], owner=os.geteuid())
            for f in self.followers.values():
                f.bell = self.bell
        self.epoch = meta["epoch"]
        dirs = meta["log_dirs"]
        if self.index >= len(dirs):
            return
        wanted = {}
        for name, t in meta["topics"].items():
            settings = settings_for(t.get("config") or {})
            for p, state in enumerate(t.get("partition_states") or []):
                reps = state["replicas"]
                if self.index in reps and self.index != state["leader"]:
                    wanted[(name, p)] = ((t["rings"][p], t["log_dirs"][p], dirs[self.index], reps.index(self.index)),
                                         settings, t.get("topic_id"))
        for key, f in list(self.followers.items()):
            spec = wanted.get(key)
            if spec is not None and f.source == spec[0] and f.topic_id == spec[2]:
                continue
            if spec is not None and f.topic_id == spec[2] and f.source[0] == spec[0][0] and \
                    f.source[2:] == spec[0][2:]:
                try:
                    f.follow(spec[0])   # only the leader moved
                    self.files.used(f)
                    continue
                except Exception as exc:  # reopened below, as any follower that cannot go on
                    log(f"{f.where()}: cannot follow the new leader in {spec[0][1]}: {exc!r}; reopening")
            self.files.forget(f)
            f.close()
            del self.followers[key]
        self.unopened = {}
        for key, spec in wanted.items():
            if key not in self.followers:
                self._open(key, spec)

    def _open(self, key, spec):
        (ring_name, leader_dir, follower_dir, replica), settings, topic_id = spec
        self.breadcrumb.set(key)
        try:
            f = FollowerLog(key[0], key[1], ring_name, leader_dir, follower_dir, replica, settings, topic_id,
                            self.bell, self.index)
            f.start()
        except PartitionBusy as exc:
            # A failover made the persister's old leader log a follower: it lets go once it
            # has written what the ring held for it.
            if key not in self.unopened:
                info(f"{key[0]}-{key[1]}: {exc}; waiting for it to let go")
            self.unopened[key] = (spec, time.monotonic() + RETRY_BUSY_S)
            return
        except Exception as exc:  # one bad partition must not stop the others
            if key not in self.unopened:
                log(f"{key[0]}-{key[1]}: cannot open the follower replica in {follower_dir}: {exc!r}; retrying")
            self.unopened[key] = (spec, time.monotonic() + RETRY_OPEN_S)
            return
        self.unopened.pop(key, None)
        self.followers[key] = f
        self.files.used(f)

    def _supervisor_gone(self):
        try:
            return self.control.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    def run(self):
        last_moved = time.monotonic()
        next_check = 0.0
        try:
            self.refresh_metadata()
            while not self.stopping:
                now = time.monotonic()
                if self.bell.metadata_epoch != self.epoch:
                    self.refresh_metadata()
                for key, (spec, at) in list(self.unopened.items()):
                    if now >= at:
                        self._open(key, spec)
                moved = False
                for key, f in list(self.followers.items()):
                    self.breadcrumb.set(key)
                    if f.pump(now):
                        moved = True
                        self.files.used(f)
                GROUPED.flush()
                if now >= next_check:
                    next_check = now + 0.1
                    if self._supervisor_gone():
                        break
                if moved:
                    last_moved = now
                    continue
                if any(f.waited_for() for f in self.followers.values()):
                    time.sleep(BUSY_POLL_S)
                else:
                    time.sleep(POLL_S if now - last_moved < IDLE_AFTER_S else IDLE_POLL_S)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._TRANSPORT:
                raise
        for f in self.followers.values():
            f.close()
        self.control.close()
        return 0

    def stop(self, *_):
        self.stopping = True


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m shmlog.broker.mirror <data_dir> <log dir index>", file=sys.stderr)
        return 2
    logs.setup("mirror")
    supervisor = os.getppid()
    # One mirror per log dir: one started by a restarted supervisor waits for the previous one.
    lock = os.open(os.path.join(os.path.realpath(argv[0]), f"mirror-{argv[1]}.lock"),
                   os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        mirror = Mirror(argv[0], int(argv[1]))
    except KafkaException as exc:
        log(str(exc))
        return 1
    if mirror.control.peer_pid != supervisor:
        mirror.control.close()
        return 0
    signal.signal(signal.SIGTERM, mirror.stop)
    signal.signal(signal.SIGINT, mirror.stop)
    info(f"started for log dir {argv[1]} of {mirror.data_dir} (supervisor pid {supervisor})")
    return mirror.run()


if __name__ == "__main__":
    logs.exit_process(main())
