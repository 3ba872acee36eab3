"""The persister: tails every partition ring and appends its batches to segment files.

Run as `python -m shmlog.broker.persister <data_dir>`; the supervisor spawns and restarts it.

For each partition the persister keeps a cursor (ring position, next offset) at what is on
disk. Each round it copies what producers published past the cursor into one buffer,
checks the copy (base offsets, CRC32C) and writes it to the segment with writev, then
publishes how far the ring is persisted and releases that ring space to producers. It
fdatasyncs by policy: whenever a producer waits with acks=all (one fdatasync covers every
waiter: group commit), or when flush.messages / flush.ms say so; flushed_offset, which
acks=all waits on, only moves after an fdatasync.

Wake policy (see docs/durability.md): acks=0/1 do not need the persister promptly, and on a
small machine a wake-up per published batch costs the producer a futex syscall and the
consumers a core. So while records flow the persister sleeps on a PERSIST_INTERVAL_S timer
without watching the rings; what needs it sooner wakes its doorbell slot directly (named in
each ring's persist.persister_slot): an acks=all producer waiting for fdatasync, a producer
waiting for ring space, a publish that takes the unpersisted bytes past a quarter of the
ring. Only after a timer wake found nothing new does it watch the rings again (the first
publish into an idle ring wakes it), sleeping up to IDLE_WAIT_S.

Restart consistency: the cursor starts at what the ring says was persisted. Batches the
segments already hold (written, then the persister died before publishing) are skipped;
segments that end below it mean a previous run lost data (logged; the log continues, in a
new segment, at the ring's offsets).

Retention (shmlog/retention.py) runs every log.retention.check.interval.ms, and at once when
delete_records raised a partition's requested log start offset. The log start offset is
checkpointed in the partition directory before segments go, and published in the ring
header (persist.log_start_offset) where consumers read it.

One persister per data dir: it holds an exclusive lock on <data_dir>/persister.lock, so one
started by a restarted supervisor waits until the previous one has drained and exited.
"""
import errno
import fcntl
import logging
import os
import signal
import socket
import sys
import time
from collections import namedtuple

import numpy as np

from shmlog import control
from shmlog._native import ffi, lib
from shmlog._native.layout import FRAME_REF_DTYPE
from shmlog._native.ring import Doorbell, Ring
from shmlog.broker import fd_limit, logs, metadata, open_files, persister_stats
from shmlog.broker.breadcrumb import Breadcrumb
from shmlog.broker.persister_scan import ActiveSet
from shmlog.config import TOPIC_DEFAULTS
from shmlog.errors import KafkaError, KafkaException, reason_of
from shmlog.log import leader_epoch, retention
from shmlog.log.segment import PartitionBusy, SegmentWriter, SyncFailed, partition_dir

FETCH_FRAMES = 1024
IDLE_WAIT_S = 0.1            # cap on a doorbell sleep, so metadata and dead claims are polled too
ALL_IDLE_WAIT_S = 1.0        # the same with no partition active: a publish or a metadata change wakes us
PERSIST_INTERVAL_S = 0.005   # while records flow, persist on this timer rather than per publish
RETRY_AFTER_ERROR_S = 0.1
REWRITE_ATTEMPTS = 3         # rewrites failing with an I/O error (not ENOSPC) before the log dir is failed
RETRY_OPEN_S = 1.0
RETRY_BUSY_S = 0.01         # the partition directory's other writer is about to let go
RETRY_CORRUPT_RING_S = 1.0
CLAIM_POLL_S = 0.02          # a claimed, unpublished frame may belong to a dead producer
CONTROL_CHECK_S = 0.1
DRAIN_TIMEOUT_S = 30.0       # the supervisor waits 60 s for us after SIGTERM
COPY_BUFFER_BYTES = 1 << 20  # grown to the largest batch met
RETENTION_CHECK_MS_DEFAULT = 300_000
LOCK_NAME = "persister.lock"
INT64_MAX = 2**63 - 1
ALL = lib.SHMLOG_FETCH_PAST_HIGH_WATERMARK   # the persister writes what readers may not see yet
ALL_CRC = ALL | lib.SHMLOG_FETCH_CHECK_CRC

Settings = namedtuple("Settings", "segment_bytes segment_ms segment_jitter_ms segment_index_bytes "
                                  "index_interval_bytes flush_messages flush_ms retention_ms retention_bytes "
                                  "delete_policy")


def log(message, level=logging.WARNING):
    """One line in the broker's log (shmlog/broker/logs.py); WARNING unless said otherwise."""
    logs.get().log(level, message)


def info(message):
    logs.get().info(message)


# Conditions many partitions hit at once (a log dir failing, descriptors running out) are logged
# as one line each with a count (logs.Grouped), written at the end of each round.
GROUPED = logs.Grouped()


def settings_for(topic_config):
    """A topic's effective config (the supervisor sends it with broker defaults applied) -> Settings."""
    cfg = {**TOPIC_DEFAULTS, **topic_config}
    return Settings(
        segment_bytes=int(cfg["segment.bytes"]),
        segment_ms=int(cfg["segment.ms"]),
        segment_jitter_ms=int(cfg["segment.jitter.ms"]),
        segment_index_bytes=int(cfg["segment.index.bytes"]),
        index_interval_bytes=int(cfg["index.interval.bytes"]),
        flush_messages=int(cfg["flush.messages"]),
        flush_ms=int(cfg["flush.ms"]),
        retention_ms=int(cfg["retention.ms"]),
        retention_bytes=int(cfg["retention.bytes"]),
        delete_policy="delete" in str(cfg["cleanup.policy"]).split(","),
    )


class PumpScratch:
    """What pumping one partition works in: the frame table a fetch fills, and the buffer its
    batches are copied into, checked in and written from. One per persister, as partitions are
    pumped one at a time (one per partition would cost every idle partition 32 KiB)."""

    def __init__(self, copy_bytes):
        self.frames = ffi.new("shmlog_frame_ref[]", FETCH_FRAMES)
        self.frame_table = np.frombuffer(ffi.buffer(self.frames), FRAME_REF_DTYPE)
        self._allocate(copy_bytes)

    def _allocate(self, copy_bytes):
        self.copy_bytes = copy_bytes
        self.copy = bytearray(copy_bytes)
        self.copy_view = memoryview(self.copy)
        self.copy_pointer = ffi.from_buffer(self.copy)

    def grow_copy(self, at_least_bytes):
        self._allocate(max(2 * self.copy_bytes, at_least_bytes))


class PartitionLog:
    """One partition: its ring, its segment writer, and how far the ring is on disk."""

    fsync_stats = None   # the Persister's FsyncStats (persister_stats.py): every flush is timed into it

    def __init__(self, topic, partition, ring_name, log_dir, settings, doorbell, scratch, requested_log_start=0,
                 topic_id=None):
        self.topic, self.partition = topic, partition
        self.source = (ring_name, log_dir)
        self.topic_id = topic_id
        self.doorbell = doorbell
        self.dir = partition_dir(log_dir, topic, partition)
        if topic_id is not None:
            # The supervisor claims the directory (partition.metadata) before the ring exists; one
            # that names another topic is an earlier topic's of the same name: never write there.
            owner = metadata.partition_topic_id(self.dir)
            if owner != topic_id:
                raise RuntimeError(f"{self.dir} is not topic id {topic_id}'s (its partition.metadata names "
                                   f"{owner or 'no topic'}); waiting for the supervisor to claim it")
        self.ring = Ring.open(ring_name, topic, partition, owner=os.geteuid())  # ours, not a squatter's
        try:
            self.writer = SegmentWriter(self.dir, settings.segment_bytes, settings.segment_ms,
                                        settings.index_interval_bytes, settings.segment_index_bytes,
                                        settings.segment_jitter_ms)
        except BaseException:
            self.ring.close()
            raise
        self.checkpointed = retention.read_checkpoint(self.dir)
        self.flushed_at = None
        self.epochs = leader_epoch.EpochCache(self.dir)
        self.log_start = max(self.writer.log_start_offset, self.checkpointed)
        self.requested_log_start = 0
        self.retention_due = 0.0
        self.retention_errno = 0
        self.configure(settings, requested_log_start)
        self.persist = self.ring.header.persist
        self.scratch = scratch
        self.cursor = ffi.new("shmlog_cursor *")
        self.probe = ffi.new("shmlog_cursor *")
        self.cursor.position = self.persist.persisted_position
        self.cursor.next_offset = self.persist.persisted_offset
        # What we may claim is durable: no more than what is on disk, until we fdatasync it.
        self.flushed = min(self.persist.flushed_offset, self.writer.log_end_offset)
        self.last_flush = time.monotonic()
        self.retry_at = 0.0
        self.storage_errno = 0
        self.corrupt_at = None
        # After a failed fdatasync (see _sync_failed): the ring pair of the last good flush, the
        # pair published as persisted while the rewrite is pending, and the failed log dir's errno.
        self.flushed_at = None
        self.rewrite_from = None
        self.rewrite_attempts = 0
        self.failed = 0
        self.on_log_dir_failed = None
        self.on_replica_failed = None   # the Persister's: tells the supervisor a replicated leader failed
        if self.writer.recovery_report:
            info(f"{self.where()}: recovery: {self.writer.recovery_report}")
        for problem in self.writer.recovery_problems:
            log(f"{self.where()}: DAMAGED LOG: {problem}")
        # Which replica this log is (replication.leader_index when we opened it): once the leader
        # moved (docs/replication.md) this log publishes nothing more in the ring.
        self.leader_index = self.ring.header.replication.leader_index
        self.take_over_from_ring()
        self._compare_with_disk()
        self.persist.persister_pid = os.getpid()

    def take_over_from_ring(self):
        """A follower that became leader (docs/replication.md) may hold fewer offsets than the
        ring says were persisted (by the previous leader, into its log dir): write the rest
        again from the ring when it still holds them; else the gap is logged as DATA LOSS (none
        of it was acknowledged at acks=all: the new leader was in the ISR)."""
        end, persisted = self.writer.log_end_offset, self.cursor.next_offset
        if end >= persisted or end < max(self.log_start, self.requested_log_start):
            return
        try:
            at = self._ring_cursor_at(end)
        except KafkaException:
            at = None
        if at is not None:
            info(f"{self.where()}: {self.dir} ends at offset {end}, below the {persisted} the ring says were "
                 f"persisted: writing offsets {end}..{persisted - 1} from the ring (a new leader catching up)")
            self.cursor.position, self.cursor.next_offset = at

    def where(self):
        return f"{self.topic}-{self.partition}"

    def configure(self, settings, requested_log_start=0):
        self.metadata_epoch = self.doorbell.metadata_epoch if hasattr(self.doorbell, "metadata_epoch") else None
        self.writer.configure(settings.segment_bytes, settings.segment_ms, settings.index_interval_bytes,
                              settings.segment_index_bytes, settings.segment_jitter_ms)
        self.flush_messages = settings.flush_messages
        self.flush_ms = settings.flush_ms
        self.settings = settings
        if requested_log_start > self.requested_log_start:
            # delete_records: a durable request from the supervisor's metadata (the ring header
            # alone is never trusted to delete data: it is shared memory anyone can scribble on).
            self.requested_log_start = requested_log_start
            self.retention_due = 0.0

    def _compare_with_disk(self):
        disk_end, persisted = self.writer.log_end_offset, self.cursor.next_offset
        ring_end = self.ring.end()[1]
        if disk_end < persisted <= max(self.log_start, self.requested_log_start):
            pass  # below the log start offset: retention or delete_records removed them
        elif disk_end < persisted:
            log(f"{self.where()}: DATA LOSS: offsets {disk_end}..{persisted - 1} were reported persisted by "
                f"a previous run but are not in {self.dir}; the log continues at offset {persisted}")
        elif disk_end > ring_end:
            log(f"{self.where()}: the ring ends at offset {ring_end}, below the log end offset {disk_end} "
                f"on disk; ring batches below {disk_end} are taken as already on disk")

    def start(self):
        """Make what a crashed run left in the page cache durable, then say so in the ring."""
        lib.shmlog_ring_advance_log_start(self.ring.map, self.log_start)
        try:
            self.flush()
        except SyncFailed as exc:
            self._sync_failed(exc)
            self._rewrite(time.monotonic())
            return
        except OSError as exc:
            self._storage_failed(exc, time.monotonic())
            return
        if self.persist.storage_error:   # an earlier persister's, or the previous leader's: this dir works
            self._storage_recovered()
        self.publish()

    # -------------------------------------------------------------- retention

    def park(self):
        """Give up the segment files (open_files.py), fdatasyncing first what is written and not
        yet flushed (earlier than flush.ms would: more durable, never less); True if parked."""
        if self.failed or self.rewrite_from is not None or self.storage_errno:
            return False
        if self.flushed < self.writer.log_end_offset:
            try:
                self.flush()
            except OSError:
                return False   # SyncFailed stays in the writer: the next pump rewrites
            self.publish()
        return self.writer.park()

    def retention_wanted(self, now):
        if self.failed or self.rewrite_from is not None:
            return False
        return now >= self.retention_due or self.requested_log_start > self.log_start

    def apply_retention(self, now, check_interval_s):
        """Delete what retention and delete_records allow; the log start offset moves first."""
        self.retention_due = now + check_interval_s
        s = self.settings
        segments = self.writer.segments()
        wanted_start = max(self.log_start, self.requested_log_start)
        count, reason = retention.deletable(segments, time.time_ns() // 1_000_000, s.retention_ms,
                                            s.retention_bytes, wanted_start, s.delete_policy)
        new_start = wanted_start
        if count:
            new_start = max(new_start, segments[count][0] if count < len(segments) else self.writer.log_end_offset)
        try:
            if new_start > self.checkpointed:
                retention.write_checkpoint(self.dir, new_start)
                self.checkpointed = new_start
            self.log_start = new_start
            # Consumers see the new start before any file goes: they reset rather than miss a segment.
            lib.shmlog_ring_advance_log_start(self.ring.map, new_start)
            gone = self.writer.delete_oldest(count) if count else []
        except OSError as exc:
            if exc.errno != self.retention_errno:
                log(f"{self.where()}: retention cannot update {self.dir}: {exc}; retrying")
            self.retention_errno = exc.errno or errno.EIO
            self.retention_due = now + RETRY_AFTER_ERROR_S
            return
        self.retention_errno = 0
        if gone:
            info(f"{self.where()}: deleted {len(gone)} segment{'s' if len(gone) != 1 else ''} "
                 f"(base offsets {gone[0]}..{gone[-1]}) by {reason}; log start offset is now {new_start}")

    # -------------------------------------------------------------- one round

    def pump(self, now):
        """Persist what is published, fdatasync if due, publish progress; True if anything moved."""
        if now < self.retry_at or self.failed:
            return False
        if self.metadata_epoch is not None and self.doorbell.metadata_epoch != self.metadata_epoch:
            # Metadata changed (maybe this topic was deleted and created again, its directory
            # renamed aside): refresh first, so nothing is written where it no longer belongs.
            return False
        if self.rewrite_from is not None:
            return self._rewrite(now)
        try:
            moved, wrote = self.persist_published()
            flushed = self.flush_if_due(now)
        except SyncFailed as exc:
            self._sync_failed(exc)
            return self._rewrite(now)
        except OSError as exc:
            self._storage_failed(exc, now)
            return False
        except KafkaException as exc:
            self._ring_corrupt(exc, now)
            return False
        if (wrote or flushed) and self.storage_errno:
            self._storage_recovered()
        if moved or flushed or self.high_watermark() != self.persist.flushed_offset:
            self.publish()
        return moved or flushed

    def persist_published(self):
        """Append the batches published past the cursor: (cursor moved, bytes written).

        They are copied out of the ring and checked as copied, and the copy is what is
        written: a write straight from the mapping would write whatever some process put
        there after the check (any process mapping the ring can write into it)."""
        probe, scratch = self.probe, self.scratch
        while True:
            probe.position, probe.next_offset = self.cursor.position, self.cursor.next_offset
            n = self.ring.fetch(probe, scratch.copy_pointer, scratch.copy_bytes, scratch.frames, FETCH_FRAMES,
                                ALL_CRC)
            if n != lib.SHMLOG_ESMALL:
                break
            scratch.grow_copy(scratch.frames[0].batch_bytes)
        if n == lib.SHMLOG_EOVERWRITTEN:
            self._resync_after_overwrite()
            return True, False
        if n <= 0:
            if probe.position != self.cursor.position:  # only padding: step over it
                self.cursor.position, self.cursor.next_offset = probe.position, probe.next_offset
                return True, False
            return self._repair_stuck_claim(), False
        frames = scratch.frame_table[:n]
        bases = frames["base_offset"]
        # Batches the segments already hold: a previous run wrote them but died before publishing.
        end = self.writer.log_end_offset
        # Offsets only grow along the ring: when the first batch ends past the log end (always,
        # but after a restart) none is skipped, without numpy's cost per call on a few batches.
        first_end = int(bases[0]) + int(frames["record_count"][0])
        skip = 0 if first_end > end else int(np.count_nonzero(bases + frames["record_count"] <= end))
        if skip < n and int(bases[skip]) < end:
            log(f"{self.where()}: ring batch at offset {int(bases[skip])} straddles the log end offset {end} "
                f"on disk; keeping the disk's copy and skipping it")
            skip += 1
        wrote = skip < n
        if wrote:
            view, starts = scratch.copy_view, frames["dst_pos"]
            last = n - 1
            self.writer.append(view[int(starts[skip]):int(starts[last]) + int(frames["batch_bytes"][last])],
                               int(bases[skip]), probe.next_offset)
            if self.ring.header.replication.replica_count > 1 and \
                    leader_epoch.batch_epoch(view, int(starts[last])) > self.epochs.latest:
                self.epochs.note(view, list(zip(starts[skip:].tolist(), bases[skip:].tolist())))
        self.cursor.position, self.cursor.next_offset = probe.position, probe.next_offset
        return True, wrote

    def flush_if_due(self, now):
        unflushed = self.writer.log_end_offset - self.flushed
        if unflushed <= 0:
            return False
        if (self.persist.persist_waiters or self.persist.flush_requested_offset > self.flushed
                or unflushed >= self.flush_messages
                or (now - self.last_flush) * 1000 >= self.flush_ms
                or self.followers_ahead()):
            self.flush()
            self.last_flush = now
            return True
        return False

    def flush(self):
        pending = self.writer.log_end_offset > self.flushed   # else there is nothing to fdatasync
        started = time.monotonic()
        self.flushed = self.writer.flush()
        if pending and self.fsync_stats is not None:
            self.fsync_stats.observe(self.source[1], time.monotonic() - started)
        if self.flushed == self.cursor.next_offset:
            self.flushed_at = (self.cursor.position, self.cursor.next_offset)

    def followers_ahead(self):
        """A replicated partition: its high watermark (what its readers see, whatever their
        producers' acks) includes our own fdatasync, so we fdatasync what we write each round."""
        return self.ring.header.replication.replica_count > 1

    def high_watermark(self):
        """What flushed_offset (acks=all, and consumers of a replicated topic) may say: our own
        fsynced offset, and with followers in the ISR the smallest of theirs too (each mirror
        publishes its word; docs/replication.md)."""
        r = self.ring.header.replication
        hw = self.flushed
        mask = r.isr_mask & ~(1 << r.leader_index)
        if r.replica_count > 1 and mask:
            for i in range(min(r.replica_count, lib.SHMLOG_MAX_REPLICAS)):
                if mask >> i & 1:
                    hw = min(hw, lib.shmlog_ring_replica_fsynced(self.ring.map, i))
        return hw

    def deposed(self):
        """Another replica leads the partition now: what we did is not the ring's to say."""
        return self.ring.header.replication.leader_index != self.leader_index

    def publish(self):
        if self.deposed():
            return
        hw, before = self.high_watermark(), self.persist.flushed_offset
        lib.shmlog_ring_publish_persisted(self.ring.map, self.cursor.position, self.cursor.next_offset, hw)
        lib.shmlog_ring_release_to(self.ring.map, self.cursor.position)
        if hw != before and self.ring.header.replication.replica_count > 1:
            # Readers of a replicated ring see batches only below the high watermark: it moved.
            lib.shmlog_ring_wake_readers(self.ring.map, self.doorbell.ptr)

    def _publish_held(self):
        """Publish progress without releasing: while a rewrite is pending, persisted stays at
        the last good flush (so producers short of space release no further, and a restarted
        persister starts there); waiters in wait_flushed wake up to see storage_error."""
        if self.deposed():
            return
        position, offset = self.rewrite_from if self.rewrite_from is not None else \
            (self.cursor.position, self.cursor.next_offset)
        lib.shmlog_ring_publish_persisted(self.ring.map, position, offset, self.high_watermark())

    # -------------------------------------------------------------- a failed fdatasync

    def _sync_failed(self, exc):
        """An fdatasync failed: what was written since the last good one may be lost whatever
        later syncs say (fsyncgate). flushed_offset stays where it is, and those offsets are
        written again, from the ring, into a new segment (_rewrite)."""
        first, end = self.flushed, self.cursor.next_offset
        try:
            at = self._ring_cursor_at(first) if first < end else (self.cursor.position, end)
        except KafkaException:
            at = None  # corrupt ring bytes: they cannot be written again either
        written = max(end, self.writer.log_end_offset)   # a failed roll: the writer got past the cursor
        log(f"{self.where()}: {exc}; offsets {first}..{written - 1} written to {self.dir} since the last good "
            f"fdatasync may be lost: writing them again from the ring into a new segment"
            if first < written else f"{self.where()}: {exc}; syncing {self.dir} again")
        self.rewrite_attempts = 0
        if at is None:
            self._fail_log_dir(exc, f"offsets {first}..{end - 1} are no longer in the ring to write them again")
            return
        self.rewrite_from = at
        self._publish_held()

    def _ring_cursor_at(self, offset):
        """(ring position, offset) of the batch starting at offset, or None if the ring lost it."""
        if self.flushed_at is not None and self.flushed_at[1] == offset:
            return self.flushed_at
        found = self.ring.locate(offset)
        if found is None:
            return None
        probe = self.probe
        probe.position, probe.next_offset = found.position, found.next_offset
        while probe.next_offset < offset:
            if self.ring.fetch(probe, ffi.NULL, 0, self.scratch.frames, 1, ALL) != 1 or probe.next_offset > offset:
                return None  # fell out of the ring, or a batch straddles offset
        return probe.position, probe.next_offset

    def _copy_from_ring(self, position, offset, end):
        """Copies of the batches for offsets [offset, end) out of the ring (CRC-checked, each
        fetch checked not to have been overwritten meanwhile); None if the ring lost them."""
        probe = self.probe
        probe.position, probe.next_offset = position, offset
        pieces, first = [], None
        size = 1 << 20
        while probe.next_offset < end:
            buf = bytearray(size)
            n = self.ring.fetch(probe, ffi.from_buffer(buf), len(buf), self.scratch.frames, FETCH_FRAMES, ALL_CRC)
            if n == lib.SHMLOG_ESMALL:
                size = max(2 * size, self.scratch.frames[0].batch_bytes)
                continue
            if n <= 0:
                return None
            view = memoryview(buf)
            for _, dst_pos, base, batch_bytes, count in self.scratch.frame_table[:n].tolist():
                if base >= end:
                    break
                if base + count <= offset:
                    continue
                first = base if first is None else first
                pieces.append(view[dst_pos:dst_pos + batch_bytes])
        return first, pieces

    def _rewrite(self, now):
        """Write the offsets of a failed fdatasync again into a new segment and fdatasync it;
        after REWRITE_ATTEMPTS failures the log dir is failed. True once it worked."""
        if self.failed or self.rewrite_from is None:
            return False
        first, end = self.flushed, self.cursor.next_offset
        try:
            copied = self._copy_from_ring(*self.rewrite_from, end) if first < end else (None, [])
        except KafkaException:
            copied = None
        if copied is None:
            self._fail_log_dir(self.writer.sync_failed or OSError(errno.EIO, "fdatasync failed"),
                               f"offsets {first}..{end - 1} are no longer in the ring to write them again")
            return False
        base, pieces = copied
        written = self.writer.log_end_offset
        try:
            self.writer.discard_from(first)
            if pieces:
                self.writer.append(pieces, base, end)
            self.flush()
        except OSError as exc:
            # A full disk is waited out (the ring keeps the offsets: persisted is held); an I/O
            # error that persists fails the log dir.
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                self.rewrite_attempts += 1
            if self.rewrite_attempts >= REWRITE_ATTEMPTS:
                self._fail_log_dir(exc, f"writing offsets {first}..{end - 1} again into a new segment failed "
                                        f"{self.rewrite_attempts} times")
            else:
                self._storage_failed(exc, now, quiet=exc.errno not in (errno.ENOSPC, errno.EDQUOT))
            return False
        if first < end:
            log(f"{self.where()}: wrote offsets {first}..{end - 1} again into {self.writer.active_segment} and "
                f"fdatasync'ed it")
        elif first < written:
            log(f"{self.where()}: cut {self.dir} back to offset {first}, where the last good fdatasync ended; "
                f"the offsets after it are written again from the ring into a new segment")
        self.rewrite_from = None
        self.rewrite_attempts = 0
        if self.storage_errno:
            self._storage_recovered()
        self.publish()
        return True

    def _fail_log_dir(self, exc, why):
        code = exc.errno or errno.EIO
        if self.on_log_dir_failed is not None:
            self.on_log_dir_failed(self.source[1], code, f"{self.where()}: {exc}; {why}")
        else:
            log(f"log dir {self.source[1]} failed ({errno.errorcode.get(code, code)}): {self.where()}: {exc}; {why}")
        self.fail(code)

    def fail(self, code):
        """The log dir failed: nothing more is written here until the persister restarts, and
        acks=all producers get KAFKA_STORAGE_ERROR (what the ring holds stays there)."""
        if self.failed:
            return
        self.failed = code
        self.storage_errno = code
        if not self.deposed():
            self.persist.storage_error = code
            self._replica_failed()
        self._publish_held()

    # -------------------------------------------------------------- trouble

    def _repair_stuck_claim(self):
        """A producer that died between claim and publish wedges the cursor; pad its claim."""
        position = self.cursor.position
        if self.ring.end()[0] > position and not self.ring.has_data(position):
            return bool(self.ring.repair_if_stuck(position, self.doorbell.ptr))
        return False

    def _resync_after_overwrite(self):
        # Cannot happen while we are the releaser; if something else released ring space,
        # what it overwrote is lost: say so and continue from the oldest batch still there.
        position, offset = self.ring.start()
        log(f"{self.where()}: DATA LOSS: the ring overwrote offsets {self.cursor.next_offset}..{offset - 1} "
            f"before they were persisted")
        self.cursor.position, self.cursor.next_offset = position, offset

    def _ring_corrupt(self, exc, now):
        if self.corrupt_at != self.cursor.position:
            self.corrupt_at = self.cursor.position
            log(f"{self.where()}: {reason_of(exc)}; persisting of this partition is stuck until the ring is repaired "
                f"or the topic recreated")
        self.retry_at = now + RETRY_CORRUPT_RING_S

    def _storage_failed(self, exc, now, quiet=False):
        code = exc.errno or errno.EIO
        if code == errno.ENOENT and self.metadata_epoch is not None and \
                self.doorbell.metadata_epoch != self.metadata_epoch:
            # The topic was deleted (or deleted and created again) under us: its directory went
            # with it. Not a storage error; the metadata refresh that follows drops or replaces us.
            self.retry_at = now + RETRY_AFTER_ERROR_S
            return
        if code != self.storage_errno and not quiet:
            GROUPED.add(("write", code, self.source[1]), self.where(),
                        f"{self.where()}: cannot write {self.dir}: {exc}; acks=all producers get KAFKA_STORAGE_ERROR, "
                        f"retrying every {RETRY_AFTER_ERROR_S * 1000:g} ms (batches stay in the ring meanwhile)")
        first = code != self.storage_errno
        self.storage_errno = code
        if not self.deposed():
            self.persist.storage_error = code
            if first:
                self._replica_failed()
        # Producers sleeping in wait_flushed must wake up to see the error.
        self._publish_held()
        self.retry_at = now + RETRY_AFTER_ERROR_S

    def _replica_failed(self):
        """A replicated partition's leader moves off a failing log dir (docs/replication.md): say
        so to the supervisor at once instead of waiting for its housekeeping round."""
        if self.on_replica_failed is not None and self.ring.header.replication.replica_count > 1:
            self.on_replica_failed()

    def _storage_recovered(self):
        GROUPED.add(("works again", self.source[1]), self.where(), f"{self.where()}: writing to {self.dir} works again",
                    logging.INFO)
        self.storage_errno = 0
        if not self.deposed():
            self.persist.storage_error = 0

    # -------------------------------------------------------------- waiting

    def attach(self, slot):
        """Name the doorbell slot we sleep on in the ring header (slot < 0: none), so that what
        needs us promptly (acks=all, a producer short of space) can wake us directly."""
        self.persist.persister_slot = slot + 1 if slot >= 0 else 0

    def has_work(self, now):
        """Anything to do: something published past the cursor, or an acks=all waiter to fsync for."""
        if now < self.retry_at or self.failed:
            return False
        if self.rewrite_from is not None:
            return True
        return bool(self.ring.has_data(self.cursor.position) or
                    ((self.persist.persist_waiters or self.persist.flush_requested_offset > self.flushed)
                     and self.writer.log_end_offset > self.flushed)
                    or self.high_watermark() != self.persist.flushed_offset
                    or (self.writer.log_end_offset > self.flushed and self.followers_ahead()))

    def has_urgent_work(self, now):
        """What may not wait for the timer: an acks=all waiter, a producer waiting for ring space,
        or more than a quarter of the ring unpersisted (the producers' wake-ups for these)."""
        if now < self.retry_at or self.failed:
            return False
        if self.rewrite_from is not None:
            return True
        published = self.ring.has_data(self.cursor.position)
        if self.persist.persist_waiters and (published or self.writer.log_end_offset > self.flushed):
            return True
        if self.high_watermark() != self.persist.flushed_offset or (   # a follower fsynced more
                self.writer.log_end_offset > self.flushed and self.followers_ahead()):
            return True
        return bool(published and (self.ring.header.release.space_waiters or
                                   self.ring.end()[0] - self.cursor.position >= self.ring.capacity_bytes // 4))

    def wake_after(self, now, flowing=False):
        """Seconds until this partition needs a look even if nobody wakes us; `flowing`: records
        were persisted since the last sleep, so we do not watch the ring this time."""
        if now < self.retry_at:
            return self.retry_at - now
        if self.failed:
            return IDLE_WAIT_S
        if self.rewrite_from is not None:
            return 0
        wait = IDLE_WAIT_S
        if self.writer.log_end_offset > self.flushed and self.flush_ms < INT64_MAX:
            wait = min(wait, self.last_flush + self.flush_ms / 1000 - now)
        if self.ring.end()[0] > self.cursor.position:
            wait = min(wait, PERSIST_INTERVAL_S if flowing else CLAIM_POLL_S)
        if self.persist.flush_requested_offset > self.flushed:   # pipelined acks=all: group commit
            wait = min(wait, PERSIST_INTERVAL_S)
        return wait

    # -------------------------------------------------------------- shutdown

    def drain_once(self):
        """One drain step: 'moved', 'done' (nothing more published) or 'error'."""
        now = time.monotonic()
        if self.failed:
            return "done"
        if now < self.retry_at:
            return "error"
        if self.rewrite_from is not None:
            return "moved" if self._rewrite(now) else "error"
        try:
            moved, wrote = self.persist_published()
        except SyncFailed as exc:
            self._sync_failed(exc)
            return "moved" if self._rewrite(now) else "error"
        except OSError as exc:
            self._storage_failed(exc, now)
            return "error"
        except KafkaException as exc:
            self._ring_corrupt(exc, now)
            return "done"
        if wrote and self.storage_errno:
            self._storage_recovered()
        if moved:
            self.publish()
        return "moved" if moved else "done"

    def finish(self):
        """fdatasync and publish the final state; False if the disk refused."""
        if self.failed:
            return False
        if self.rewrite_from is not None:
            return self._rewrite(time.monotonic())
        try:
            self.flush()
        except SyncFailed as exc:
            self._sync_failed(exc)
            return self._rewrite(time.monotonic())
        except OSError as exc:
            self._storage_failed(exc, time.monotonic())
            return False
        if self.storage_errno:
            self._storage_recovered()
        self.publish()
        return True   # close() leaves the producer snapshot (SegmentWriter._leave_clean_close)

    def close(self):
        self.writer.close()
        self.ring.close()


class Persister:
    def __init__(self, data_dir):
        self.data_dir = os.path.realpath(data_dir)
        self.control = control.Control(self.data_dir, register_as="persister")
        self.retention_check_s = RETENTION_CHECK_MS_DEFAULT / 1000
        self.partitions = {}     # (topic, partition) -> PartitionLog
        self.unopened = {}       # (topic, partition) -> (spec, retry at)
        self.failed_dirs = {}    # log dir -> errno: a failed fdatasync that could not be made good
        self.bell = None
        self.slot = -1
        self.epoch = None
        self.stopping = False
        self.next_control_check = 0.0
        self.flowing = False     # something was persisted since the last sleep
        self.fsync_stats = persister_stats.FsyncStats(self.data_dir)
        self.breadcrumb = Breadcrumb(self.data_dir, "persister")   # for the supervisor, should we die
        self.scan = ActiveSet()  # the partitions a round looks at (persister_scan.py)
        self.files = open_files.OpenFiles(open_files.limit_from_rlimit())
        self.scratch = PumpScratch(COPY_BUFFER_BYTES)

    # -------------------------------------------------------------- metadata

    def refresh_metadata(self):
        meta = self.control.request("metadata")
        self._use_doorbell(meta["doorbell"])
        self.epoch = meta["epoch"]
        broker = meta.get("broker") or {}
        self.retention_check_s = int(broker.get("log.retention.check.interval.ms") or
                                     RETENTION_CHECK_MS_DEFAULT) / 1000
        wanted = {}
        for name, t in meta["topics"].items():
            if not (t.get("config") or {}).get("shmlog.persist", True):
                continue   # memory-only (docs/durability.md): its producers release the ring themselves
            settings = settings_for(t.get("config") or {})
            starts = t.get("log_start_offsets") or [0] * t["partitions"]
            for p in range(t["partitions"]):
                wanted[(name, p)] = (t["rings"][p], t["log_dirs"][p], settings, starts[p] if p < len(starts) else 0,
                                     t.get("topic_id"))
        for key, part in list(self.partitions.items()):
            spec = wanted.get(key)
            if spec is not None and part.source == spec[:2] and part.topic_id == spec[4]:
                part.configure(spec[2], spec[3])
                continue
            self.files.forget(part)
            if spec is not None and part.topic_id == spec[4]:
                self._drain_and_close(part)  # moved to another ring or log dir: finish the old one
            else:
                part.close()  # topic deleted (maybe created again): its ring and directory went with it
            del self.partitions[key]
        self.unopened = {}
        for key, spec in wanted.items():
            if key not in self.partitions:
                self._open(key, spec)
        self.scan.reset(self.partitions.values(), self.slot)

    def _use_doorbell(self, name):
        if self.bell is not None and self.bell.mapping.name == name:
            return
        if self.bell is not None:
            self.scan.forget(self.partitions.values())   # our watch bits name the old slot
            self.bell.release(self.slot)
            self.bell.close()
        self.bell = Doorbell.open(name, owner=os.geteuid())
        self.slot = self.bell.acquire()
        if self.slot < 0:
            log("no free doorbell slot; polling every 100 ms instead of sleeping on the doorbell")
        for part in self.partitions.values():
            part.doorbell = self.bell
            part.attach(self.slot)

    def _open(self, key, spec):
        ring_name, log_dir, settings, requested_log_start, topic_id = spec
        self.breadcrumb.set(key)
        try:
            part = PartitionLog(key[0], key[1], ring_name, log_dir, settings, self.bell, self.scratch,
                                requested_log_start, topic_id)
            part.fsync_stats = self.fsync_stats
        except PartitionBusy as exc:
            # A failover made this log dir the leader's: the mirror lets go of its follower log
            # as soon as it sees the new metadata.
            if key not in self.unopened:
                info(f"{key[0]}-{key[1]}: {exc}; waiting for it to let go")
            self.unopened[key] = (spec, time.monotonic() + RETRY_BUSY_S)
            return
        except Exception as exc:  # one bad partition must not stop the others
            if key not in self.unopened:
                GROUPED.add(("open", type(exc).__name__, getattr(exc, "errno", None), log_dir), f"{key[0]}-{key[1]}",
                            f"{key[0]}-{key[1]}: cannot open ring {ring_name} or log dir {log_dir}: {exc!r}; retrying")
            self.unopened[key] = (spec, time.monotonic() + RETRY_OPEN_S)
            return
        self.unopened.pop(key, None)
        part.attach(self.slot)
        part.on_log_dir_failed = self.log_dir_failed
        part.on_replica_failed = self.replica_failed
        if log_dir in self.failed_dirs:
            part.fail(self.failed_dirs[log_dir])
        else:
            part.start()
        self.partitions[key] = part
        self.files.used(part)

    def log_dir_failed(self, log_dir, code, detail):
        """Fail a log dir (Kafka's offline log dir): one line, and every partition in it stops."""
        if log_dir not in self.failed_dirs:
            self.failed_dirs[log_dir] = code
            log(f"log dir {log_dir} failed with {errno.errorcode.get(code, code)} ({os.strerror(code)}): {detail}; "
                f"nothing more is written to it until the persister restarts, acks=all producers of its partitions "
                f"get KAFKA_STORAGE_ERROR and unwritten records stay in the rings")
        for part in self.partitions.values():
            if part.source[1] == log_dir:
                part.fail(code)

    def replica_failed(self):
        try:
            self.control.request("replica_failed")
        except KafkaException as exc:   # the supervisor is gone or busy: its housekeeping round finds it anyway
            info(f"could not tell the supervisor about a failed leader replica: {exc}")

    def _retry_unopened(self, now):
        opened = len(self.partitions)
        for key, (spec, retry_at) in list(self.unopened.items()):
            if now >= retry_at:
                self._open(key, spec)
        if len(self.partitions) != opened:
            self.scan.reset(self.partitions.values(), self.slot)

    def _drain_and_close(self, part):
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while part.drain_once() == "moved" and time.monotonic() < deadline:
            pass
        part.finish()
        part.close()

    # -------------------------------------------------------------- main loop

    def run(self):
        try:
            self.refresh_metadata()
            while not self.stopping:
                now = time.monotonic()
                if self.bell.metadata_epoch != self.epoch:
                    self.refresh_metadata()
                if self.unopened:
                    self._retry_unopened(now)
                busy = False
                for part in self.scan.due(now, self._sequence()):
                    self.breadcrumb.set((part.topic, part.partition))
                    if part.pump(now):
                        busy = True
                        self.files.used(part)
                    if part.retention_wanted(now):
                        part.apply_retention(now, self.retention_check_s)
                        self.files.used(part)
                self.scan.settle(now)
                self._retention_pass(now)
                self.fsync_stats.maybe_write(now)
                GROUPED.flush()
                if now >= self.next_control_check:
                    self.next_control_check = now + CONTROL_CHECK_S
                    if self._supervisor_gone():
                        break
                if busy:
                    self.flowing = True
                else:
                    self.idle_wait(time.monotonic())
            if self.stopping:
                # Told to stop: the drain covers every ring the supervisor has now, so ask for
                # the metadata once more whatever the epoch says (a topic created, or the
                # internal __consumer_offsets by a first commit, a moment before the stop; its
                # records produced at once) and open what it added.
                self.refresh_metadata()
                for key, (spec, _) in list(self.unopened.items()):
                    self._open(key, spec)   # no waiting for the retry time: this is the last chance
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._TRANSPORT:
                raise
            # The supervisor is gone; it starts a new persister when it comes back.
        return self.shutdown()

    def _supervisor_gone(self):
        try:
            return self.control.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    def _retention_pass(self, now):
        """Retention of every partition, once the soonest check is due (not per round)."""
        for part in self.scan.retention_due(now):
            if part.retention_wanted(now):
                part.apply_retention(now, self.retention_check_s)
                self.files.used(part)
        if now >= self.scan.next_retention:
            self.scan.retention_done()

    def idle_wait(self, now):
        # Only the active partitions: an idle one needs nothing before its ring moves, which
        # its watch bit (persister_scan.py) or the scan below notices.
        parts = list(self.scan.active)
        flowing, self.flowing = self.flowing, False
        cap = IDLE_WAIT_S if parts or self.unopened else min(ALL_IDLE_WAIT_S, max(0.0, self.scan.next_retention - now))
        timeout = min([cap] + [part.wake_after(now, flowing) for part in parts])
        if self.unopened:
            # Nothing rings for a partition we could not open: after a failover its directory's
            # mirror lets go within milliseconds, and acks=all waits until we have it.
            timeout = min(timeout, min(at for _, at in self.unopened.values()) - now)
        if flowing:
            timeout = min(timeout, PERSIST_INTERVAL_S)
        if timeout <= 0:
            return
        if self.slot < 0:
            time.sleep(timeout)
            return
        bell, slot = self.bell.ptr, self.slot
        # Sequence first, then (watch and) re-check: a publish or a producer's direct wake after
        # the re-check bumps the sequence we sleep on, so it cannot slip between check and sleep.
        seq = lib.shmlog_doorbell_sequence(bell, slot)
        if flowing:
            # Records are flowing: persist on the timer, not per publish (no watch bits on the
            # active rings, so their producers do not wake us); only what may not wait for the
            # timer wakes us.
            if not any(part.has_urgent_work(now) for part in parts) and not self.stopping:
                lib.shmlog_doorbell_wait(bell, slot, seq, int(timeout * 1e9))
            return
        for part in parts:
            lib.shmlog_doorbell_watch(part.ring.map, slot, 1)
        try:
            if not any(part.has_work(now) for part in parts) and not self.stopping \
                    and not self._idle_ring_moved(parts, seq):
                lib.shmlog_doorbell_wait(bell, slot, seq, int(timeout * 1e9))
        finally:
            for part in parts:
                lib.shmlog_doorbell_watch(part.ring.map, slot, 0)

    def _sequence(self):
        return lib.shmlog_doorbell_sequence(self.bell.ptr, self.slot) if self.slot >= 0 else None

    def _idle_ring_moved(self, active, seq):
        """After reading the doorbell sequence `seq`: did a ring outside `active` move meanwhile
        (its publish may have rung while we were awake, or come before its watch bit went up)?"""
        now = time.monotonic()
        active = set(active)
        return any(part not in active and not part.failed and now >= part.retry_at
                   for part in self.scan.idle_moved(seq))

    # -------------------------------------------------------------- shutdown

    def drain(self):
        """Write everything already published, fdatasync it all; True if nothing failed."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        pending = set(self.partitions.values())
        # What was claimed when we were told to stop; producers that keep going are not chased.
        targets = {part: part.ring.end()[0] for part in pending}
        while pending and time.monotonic() < deadline:
            states = {}
            for part in pending:
                states[part] = part.drain_once()
                self.files.used(part)
            pending = {part for part, state in states.items()
                       if state != "done" and part.cursor.position < targets[part]}
            if pending and all(states[part] == "error" for part in pending):
                time.sleep(RETRY_AFTER_ERROR_S)
        ok = not pending
        for part in self.partitions.values():
            ok = part.finish() and ok
        return ok

    def shutdown(self):
        GROUPED.flush()
        ok = self.drain()
        self.fsync_stats.maybe_write(time.monotonic(), force=True)
        if not ok:
            log("could not persist everything the rings hold before exiting; it stays in shared memory "
                "for the next persister")
        self.scan.forget(self.partitions.values())
        for part in self.partitions.values():
            part.persist.persister_pid = 0
            part.persist.persister_slot = 0
            part.close()
        self.partitions.clear()
        if self.bell is not None:
            self.bell.release(self.slot)
            self.bell.close()
        GROUPED.flush()
        self.control.close()
        return 0 if ok else 1

    def stop(self, *_):
        self.stopping = True


def lock_data_dir(data_dir):
    """Hold <data_dir>/persister.lock for the life of this process; waits for a previous holder."""
    fd = os.open(os.path.join(data_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        log(f"another persister still runs for {data_dir} (draining after its supervisor went); waiting for it")
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m shmlog.broker.persister <data_dir>", file=sys.stderr)
        return 2
    logs.setup("persister")   # at the level the supervisor put in our environment
    fd_limit.raise_to_hard_limit()
    supervisor = os.getppid()
    lock_data_dir(os.path.realpath(argv[0]))
    try:
        persister = Persister(argv[0])
    except KafkaException as exc:
        log(reason_of(exc))
        return 1
    if persister.control.peer_pid != supervisor:
        # The supervisor that started us died while we started (or waited for the lock); the
        # one serving now (restarted by its keeper) runs its own persister: never two at once.
        info(f"the supervisor that started this persister (pid {supervisor}) has gone; exiting")
        persister.control.close()
        return 0
    signal.signal(signal.SIGTERM, persister.stop)
    signal.signal(signal.SIGINT, persister.stop)
    # Blocked by the supervisor until now (see Supervisor.ensure_persister): a stop sent while we
    # started is delivered here, to the handler, and run() drains before exiting.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    info(f"started for {persister.data_dir} (supervisor pid {supervisor})")
    code = persister.run()
    info(f"exiting with status {code}{' (stopped)' if persister.stopping else ''}")
    return code


if __name__ == "__main__":
    logs.exit_process(main())
