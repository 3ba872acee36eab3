"""Log compaction: rewriting a partition's sealed segments to keep the latest record per key.

Kafka's log cleaner, for one partition directory (the process around it is
shmlog/broker/cleaner.py). docs/compaction.md describes the behaviour; the rules:

- Only sealed segments (every one but the newest, which the persister appends to) are
  read or rewritten, and of those only the ones whose largest timestamp is at least
  `min.compaction.lag.ms` old. The cleaner checkpoint (`cleaner-offset-checkpoint` in the
  partition directory) is the first offset not yet cleaned: segments below it are the
  "clean" part, the cleanable segments from it on the "dirty" part. A partition is cleaned
  when dirty / (clean + dirty) bytes reaches `min.cleanable.dirty.ratio`, or when its
  oldest dirty segment is older than `max.compaction.lag.ms`.
- A pass maps every key of the dirty part to its last offset (at most
  `log.cleaner.dedupe.buffer.size` / 24 keys, Kafka's 24 bytes an entry; the map ends at
  the last whole segment that fits, so a large backlog takes several passes), then
  rewrites each segment from the log start to where the map ends, keeping a record when
  no later record of its key exists in the map. Offsets never change: a batch keeps its
  base offset, lastOffsetDelta, timestamps and producer id/epoch/base sequence; only its
  records count, length and CRC change (a compressed batch is recompressed with its codec).
- A tombstone (null value) that is the latest of its key is kept until its timestamp is
  `delete.retention.ms` old, then removed. A record without a key is removed (Kafka
  refuses to append one to a compacted topic).
- Records of aborted transactions are removed; committed transactional records are
  compacted like others (Transactions says how a batch's fate is decided, and why an
  undecided one ends the clean before its segment). A COMMIT marker goes after
  `delete.retention.ms` once its transaction has no record left; ABORT markers stay (see
  _keep_records). A batch left without records is dropped, unless it is a segment's first
  batch (the file is named after it), its last
  (so the segment still ends where the next begins, and recovery and verify-log find no
  offsets missing between segments) or the last data batch of its producer id in the cleaned
  range (producer state is rebuilt from it, as in Kafka): those stay as empty batches.
- A rewritten segment is written beside the old one as `<base>.log.cleaned` (and its
  `.index.cleaned`, `.timeindex.cleaned`), fsynced, renamed to `.swap`, and exchanged with
  the old file in one rename (renameat2 RENAME_EXCHANGE), so a reader or recovery sees the
  whole old segment or the whole new one, never neither; a segment that retention deleted
  meanwhile makes the exchange fail and stays deleted. A crash at any point leaves at
  worst `.cleaned`/`.swap` files, which recover_swaps() removes. Readers that mapped the
  old file keep reading it (a superset of the new one) until they move on. The producer
  state `.snapshot` and `.txnindex` files named after the base offset are not touched.
- Consecutive segments whose sizes together fit in segment.bytes (and their indexes in
  segment.index.bytes) are rewritten as one, named after the first (Kafka's
  groupSegmentsBySize): the merged file is exchanged in like any cleaned segment, then the
  segments it replaces are unlinked; the old file's .swap goes last, so a crash in between
  leaves the sign recover_swaps() needs to unlink the rest.
"""
import ctypes
import os
import re
import threading
import time
from collections import namedtuple

from shmlog._native import ffi, lib
from shmlog._native.layout import RECORD_REF_DTYPE
from shmlog._native.shm import advise_sequential
from shmlog.log import control_record, index, retention
from shmlog.log.batch import (
    ATTR_COMPRESSION_MASK,
    ATTR_CONTROL,
    ATTR_TRANSACTIONAL,
    HEADER,
    HEADER_BYTES,
    LENGTH_FIELD_END,
    OFF_ATTRIBUTES,
    OFF_CRC,
    read_zigzag_varint,
)
from shmlog.log.segment.format import (
    INDEX_INTERVAL_BYTES,
    _Mapped,
    _unlink_segment,
    _walk,
    list_segments,
    segment_path,
)

CHECKPOINT_NAME = "cleaner-offset-checkpoint"
CLEANED = ".cleaned"
SWAP = ".swap"
DEDUPE_ENTRY_BYTES = 24      # Kafka's SkimpyOffsetMap entry: a 16-byte MD5 of the key and an 8-byte offset
_LEFTOVER = re.compile(r"^(\d{20})\.(log|index|timeindex)\.(cleaned|swap)$")
_WRITE_CHUNK = 1 << 20
THROTTLE_CHUNK_BYTES = 1 << 20

# segment_bytes / segment_index_bytes bound a merged group of cleaned segments (0: no merging)
Policy = namedtuple("Policy", "min_cleanable_dirty_ratio min_compaction_lag_ms max_compaction_lag_ms "
                              "delete_retention_ms index_interval_bytes segment_bytes segment_index_bytes")
Policy.__new__.__defaults__ = (0.5, 0, 2**63 - 1, 86_400_000, INDEX_INTERVAL_BYTES, 0, 10_485_760)


def policy_for(topic_config):
    """A topic's effective config (broker defaults applied) -> Policy."""
    from shmlog.config import TOPIC_DEFAULTS
    cfg = {**TOPIC_DEFAULTS, **topic_config}
    # No merging where retention also deletes (compact,delete): the persister keeps each sealed
    # segment's largest timestamp from when it sealed it, and would judge a merged segment by
    # its first part's, deleting the newer records merged into it before retention.ms.
    merge = "delete" not in str(cfg.get("cleanup.policy", "")).split(",")
    return Policy(float(cfg["min.cleanable.dirty.ratio"]), int(cfg["min.compaction.lag.ms"]),
                  int(cfg["max.compaction.lag.ms"]), int(cfg["delete.retention.ms"]),
                  int(cfg["index.interval.bytes"]), int(cfg["segment.bytes"]) if merge else 0,
                  int(cfg["segment.index.bytes"]))


def compacted(topic_config):
    """True when a topic's cleanup.policy contains compact."""
    return "compact" in str(topic_config.get("cleanup.policy", "")).split(",")


def read_checkpoint(partition_dir):
    return retention.read_checkpoint(partition_dir, CHECKPOINT_NAME)


class CrashPoint(Exception):
    pass


def _crash_point(name):
    """Tests kill the cleaner at named points of a clean (SHMLOG_CLEANER_CRASH_AT=name[:n])."""
    wanted = os.environ.get("SHMLOG_CLEANER_CRASH_AT")
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    left = int(count or 1) - 1
    os.environ["SHMLOG_CLEANER_CRASH_AT"] = f"{point}:{left}"
    if left <= 0:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------- the atomic swap

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a, b):
    """Swap the files at paths a and b in one step; FileNotFoundError if either is missing."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return True
        err = ctypes.get_errno()
        if err not in (38, 22, 95):   # ENOSYS, EINVAL, EOPNOTSUPP: this file system cannot exchange
            raise OSError(err, os.strerror(err), b)
    # Without exchange: replace b if it is still there (a deletion in between is lost to us).
    if not os.path.exists(b):
        raise FileNotFoundError(2, "No such file or directory", b)
    os.replace(a, b)
    return False


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover_swaps(partition_dir):
    """Remove what an interrupted clean left (`.cleaned` and `.swap` files) and rebuild the
    indexes of a segment whose swap was cut short; returns notes (one line each).

    Whichever of the old and the new segment file a crash left under the segment's name is a
    complete log of its offsets (the new one a subset with the same latest values), so
    nothing is renamed back: only the indexes, which are exchanged one by one after the
    log, may not match it, and are rebuilt. Run only while no cleaner works on the directory.
    """
    from shmlog.log.segment.recovery import _build_index
    try:
        names = os.listdir(partition_dir)
    except FileNotFoundError:
        return []
    notes, swapped = [], set()
    for name in names:
        m = _LEFTOVER.match(name)
        if not m:
            continue
        os.unlink(os.path.join(partition_dir, name))
        if m.group(3) == "swap":
            swapped.add(int(m.group(1)))
    for base in sorted(swapped):
        path = segment_path(partition_dir, base)
        try:
            mapped = _Mapped.of_path(path)
        except FileNotFoundError:
            continue  # deleted by retention
        try:
            _, offsets, times = _build_index(mapped, base, INDEX_INTERVAL_BYTES, check_crc=False)
            _, end, _ = _walk(mapped, base, False, gaps=True)
        finally:
            mapped.close()
        index.write_index_files(partition_dir, base, offsets, times)
        notes.append(f"{path}: a swap of a cleaned segment was interrupted; kept the segment file there and "
                     f"rebuilt its indexes")
        # A merged segment swapped in before the segments it replaces were all unlinked: finish that.
        covered = [b for b in list_segments(partition_dir)[:-1] if base < b < (end or base)]
        for other in covered:
            _unlink_segment(partition_dir, other)
        if covered:
            notes.append(f"{path}: holds the offsets of {len(covered)} segments merged into it; removed them")
    if notes:
        _fsync_dir(partition_dir)
    return notes


# ---------------------------------------------------------------------- planning

Segment = namedtuple("Segment", "base end size largest_timestamp")
Plan = namedtuple("Plan", "segments cleanable first_dirty clean_bytes dirty_bytes dirty_ratio due")


def _largest_timestamp(partition_dir, base, path):
    try:
        times = index.read_entries(index.time_index_path(partition_dir, base), index.TIME_DTYPE)
        if len(times):
            return int(times["ts"][-1])
    except FileNotFoundError:
        pass
    return os.stat(path).st_mtime_ns // 1_000_000


def plan(partition_dir, policy, now_ms, force=False):
    """What a clean of partition_dir would cover now, and whether it is due."""
    bases = list_segments(partition_dir)
    segments = []
    for i, base in enumerate(bases[:-1]):
        path = segment_path(partition_dir, base)
        try:
            segments.append(Segment(base, bases[i + 1], os.path.getsize(path),
                                    _largest_timestamp(partition_dir, base, path)))
        except FileNotFoundError:
            break  # retention is deleting: the next pass sees the result
    cleanable = 0
    for seg in segments:
        if now_ms - seg.largest_timestamp < policy.min_compaction_lag_ms:
            break
        cleanable += 1
    first_dirty = max(read_checkpoint(partition_dir), bases[0] if bases else 0)
    if bases and first_dirty > bases[-1]:
        # The log was cut below the checkpoint (recovery, a follower's truncation) and offsets
        # past the cut may come again: all of it is dirty (cleaning clean segments again is safe)
        first_dirty = bases[0]
    clean_bytes = sum(s.size for s in segments[:cleanable] if s.end <= first_dirty)
    dirty = [s for s in segments[:cleanable] if s.end > first_dirty]
    dirty_bytes = sum(s.size for s in dirty)
    total = clean_bytes + dirty_bytes
    ratio = dirty_bytes / total if total else 0.0
    overdue = bool(dirty) and now_ms - dirty[0].largest_timestamp > policy.max_compaction_lag_ms
    # force cleans even without dirty segments: tombstones past delete.retention.ms go then too
    due = (force and cleanable > 0) or (bool(dirty) and (ratio >= policy.min_cleanable_dirty_ratio or overdue))
    return Plan(segments, cleanable, first_dirty, clean_bytes, dirty_bytes, ratio, due)


# ---------------------------------------------------------------------- reading batches

def _batches(mapped, base):
    """[(position, batch bytes, header fields)] of a sealed segment's valid batches."""
    out = []
    _walk(mapped, base, False, lambda pos, nbytes, _last, _ts: out.append((pos, nbytes)), gaps=True)
    return [(pos, nbytes, HEADER.unpack_from(mapped.mm, pos)) for pos, nbytes in out]


class _Records:
    """Decodes one batch's records: refs (RECORD_REF_DTYPE) and the section they point into."""

    def __init__(self):
        self.refs = None

    def decode(self, mapped, pos, nbytes, fields):
        """(section, refs, section start) with refs positions relative to `section`."""
        attributes, count = fields[5], fields[12]
        view = memoryview(mapped.mm)[pos:pos + nbytes]
        if attributes & ATTR_COMPRESSION_MASK:
            from shmlog.log import codec
            records, refs = codec.decode_compressed_batch(view, False)
            return records, refs, 0
        import numpy as np
        if self.refs is None or len(self.refs) < count:
            self.refs = np.empty(max(count, 1024), RECORD_REF_DTYPE)
        n = lib.shmlog_batch_index(mapped.ptr + pos, nbytes, ffi.from_buffer("shmlog_record_ref[]", self.refs),
                                   len(self.refs), 0)
        if n < 0:
            raise ValueError(f"the batch at base offset {fields[0]} does not decode ({n})")
        return view, self.refs[:n], HEADER_BYTES


def _control(fields):
    return bool(fields[5] & ATTR_CONTROL)


class Transactions:
    """What the cleaner knows of the transactions in the segments it cleans.

    A transactional batch is aborted when the partition's aborted-transaction index covers
    it, committed when it is not and a control batch (marker) of its producer id follows it
    in the cleanable segments, and undecided otherwise (its transaction may still be open:
    the clean ends before the segment that holds it, as Kafka's stops at the first unstable
    offset). The index is read after the segments were scanned: its entry is fsynced before
    the ABORT marker is written, so every marker seen has its entry there.
    """

    def __init__(self):
        self.last_of_producer = {}    # producer id -> base offset of its last data batch (producer state)
        self.first_undecided = None   # base offset of the segment holding the first undecided batch
        self.aborted_index = None
        self._pending = {}            # producer id -> [(segment base, fields)] of its batches after its last marker

    def scan(self, seg_base, fields):
        """Take in one batch header of the cleanable segments, in offset order."""
        pid = fields[9]
        if pid < 0:
            return
        if _control(fields):
            self._pending.pop(pid, None)
            return
        self.last_of_producer[pid] = fields[0]
        if fields[5] & ATTR_TRANSACTIONAL:
            self._pending.setdefault(pid, []).append((seg_base, fields))

    def finish_scan(self, partition_dir):
        self.aborted_index = _aborted_transactions(partition_dir)
        undecided = [seg for batches in self._pending.values() for seg, fields in batches if not self.aborted(fields)]
        self.first_undecided = min(undecided) if undecided else None
        self._pending = {}

    def aborted(self, fields):
        return bool(fields[5] & ATTR_TRANSACTIONAL) and not _control(fields) and \
            self.aborted_index.aborted(fields[9], fields[10], fields[0])


def _aborted_transactions(partition_dir):
    """The one place the cleaner reads a partition's aborted transactions: an AbortedIndex of
    control_record.read_aborted() as it is now."""
    found = control_record.AbortedIndex(partition_dir)
    found.refresh(0)   # any count but its initial -1 makes it read the index
    return found


def _keyed(fields, txns):
    """True for a batch whose records take part in the key map: data batches that are not
    of an aborted transaction."""
    return not _control(fields) and fields[12] > 0 and not txns.aborted(fields)


# ---------------------------------------------------------------------- one clean

class Result:
    __slots__ = ("segments_read", "segments_rewritten", "segments_merged", "bytes_read", "bytes_written",
                 "records_removed", "cleaned_up_to", "seconds")

    def __init__(self):
        self.segments_read = self.segments_rewritten = self.segments_merged = self.bytes_read = 0
        self.bytes_written = 0
        self.records_removed = 0
        self.cleaned_up_to = None
        self.seconds = 0.0

    @property
    def bytes_reclaimed(self):
        return self.bytes_read - self.bytes_written

    def as_dict(self):
        return {name: getattr(self, name) for name in self.__slots__} | {"bytes_reclaimed": self.bytes_reclaimed}


class Throttle:
    """log.cleaner.io.max.bytes.per.second: the cleaner's reads and writes together stay under
    it over any second. A token bucket holding at most one second of credit, starting empty, so
    neither a long idle spell nor a new round lets a burst through; shared by the cleaner's
    threads, and charged every THROTTLE_CHUNK_BYTES rather than per segment, so the I/O comes in
    small steps instead of a segment at a time followed by a long pause."""

    def __init__(self, bytes_per_second):
        self.lock = threading.Lock()
        self.rate = 0.0
        self.credit = 0.0
        self.last = time.monotonic()
        self.set_rate(bytes_per_second)

    def set_rate(self, bytes_per_second):
        with self.lock:
            rate = float(bytes_per_second or 0)
            self.rate = rate if 0 < rate < float("inf") else 0.0
            self.credit = min(self.credit, self.rate)

    def account(self, nbytes, stopping=None):
        with self.lock:
            if not self.rate:
                return
            now = time.monotonic()
            self.credit = min(self.rate, self.credit + (now - self.last) * self.rate) - nbytes
            self.last = now
            wait = -self.credit / self.rate
        if wait > 0:
            if stopping is not None:
                stopping.wait(wait)   # a stop request cuts the pause short
            else:
                time.sleep(wait)


class _Charge:
    """Charges bytes to a Throttle in steps of THROTTLE_CHUNK_BYTES."""

    __slots__ = ("throttle", "stopping", "pending")

    def __init__(self, throttle, stopping):
        self.throttle, self.stopping, self.pending = throttle, stopping, 0

    def __call__(self, nbytes):
        self.pending += nbytes
        if self.pending >= THROTTLE_CHUNK_BYTES:
            self.flush()

    def flush(self):
        if self.pending:
            self.throttle.account(self.pending, self.stopping)
            self.pending = 0


def _open_segment(path):
    """A sealed segment mapped for one sequential pass (the kernel reads ahead further)."""
    mapped = _Mapped.of_path(path)
    if mapped.size:
        advise_sequential(mapped.mm)
    return mapped


def clean(partition_dir, policy, now_ms=None, dedupe_buffer_bytes=128 << 20, throttle=None, stopping=None,
          force=False):
    """Clean partition_dir once if due (or force): Result, or None when nothing was due."""
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    p = plan(partition_dir, policy, now_ms, force)
    if not p.due:
        return None
    started = time.monotonic()
    result = Result()
    charge = _Charge(throttle or Throttle(0), stopping)
    cleanable = p.segments[:p.cleanable]
    txns = _scan_transactions(partition_dir, cleanable, charge)
    if txns.first_undecided is not None:
        cleanable = [s for s in cleanable if s.end <= txns.first_undecided]
    if not cleanable:
        return None
    dirty = [s for s in cleanable if s.end > p.first_dirty]
    latest, map_end = _build_map(partition_dir, cleanable, dirty, dedupe_buffer_bytes, charge, txns)
    horizon = now_ms - policy.delete_retention_ms
    open_data = {}   # producer id -> whether its transaction since its last marker kept any record
    for group in group_by_size(partition_dir, [s for s in cleanable if s.base < map_end], policy):
        if stopping is not None and stopping.is_set():
            break
        _clean_group(partition_dir, group, latest, txns, open_data, horizon, policy.index_interval_bytes,
                     charge, result)
        _crash_point("after-segment")
    charge.flush()
    if stopping is None or not stopping.is_set():
        retention.write_checkpoint(partition_dir, map_end, CHECKPOINT_NAME)
        result.cleaned_up_to = map_end
    result.seconds = time.monotonic() - started
    return result


def _scan_transactions(partition_dir, cleanable, charge):
    """Transactions of the cleanable segments (their batch headers, then the aborted index)."""
    txns = Transactions()
    for seg in cleanable:
        try:
            mapped = _open_segment(segment_path(partition_dir, seg.base))
        except FileNotFoundError:
            break
        try:
            for _, nbytes, fields in _batches(mapped, seg.base):
                txns.scan(seg.base, fields)
                charge(nbytes)
        finally:
            mapped.close()
    txns.finish_scan(partition_dir)
    return txns


def _build_map(partition_dir, cleanable, dirty, dedupe_buffer_bytes, charge, txns):
    """(key -> last offset over the mapped dirty segments, the offset the map ends at)."""
    latest = {}
    capacity = max(1, dedupe_buffer_bytes // DEDUPE_ENTRY_BYTES)
    map_end = dirty[0].base if dirty else cleanable[-1].end
    records = _Records()
    for seg in dirty:
        try:
            mapped = _open_segment(segment_path(partition_dir, seg.base))
        except FileNotFoundError:
            break
        try:
            batches = [b for b in _batches(mapped, seg.base) if _keyed(b[2], txns)]
            incoming = sum(f[12] for _, _, f in batches)
            if latest and len(latest) + incoming > capacity:
                break   # the map is full: this segment waits for the next pass
            for pos, nbytes, fields in batches:
                section, refs, _ = records.decode(mapped, pos, nbytes, fields)
                for offset, key_pos, key_len in refs[["offset", "key_pos", "key_len"]].tolist():
                    if key_len >= 0:
                        latest[bytes(section[key_pos:key_pos + key_len])] = offset
                charge(nbytes)
            map_end = seg.end
        finally:
            mapped.close()
    return latest, map_end


def _record_spans(section, start, count):
    """[(start, end)] of each record in a records section (varint length framing)."""
    spans, pos = [], start
    for _ in range(count):
        length, body = read_zigzag_varint(section, pos)
        spans.append((pos, body + length))
        pos = body + length
    return spans


def _rebuild(batch, fields, section, start, refs, keep):
    """The batch with only the records whose `keep` is true (same offsets and producer fields)."""
    kept = [span for span, k in zip(_record_spans(section, start, len(refs)), keep) if k]
    body = b"".join(bytes(section[a:b]) for a, b in kept)
    attributes = fields[5]
    codec = attributes & ATTR_COMPRESSION_MASK
    if not kept:
        attributes &= ~ATTR_COMPRESSION_MASK
    elif codec:
        from shmlog.log import codec as codecs
        body, used = codecs.compress_records(body, codec)
        attributes = (attributes & ~ATTR_COMPRESSION_MASK) | used
    out = bytearray(HEADER_BYTES + len(body))
    out[:HEADER_BYTES] = bytes(batch[:HEADER_BYTES])
    out[HEADER_BYTES:] = body
    base, _, epoch, magic, _, _, last_delta, base_ts, max_ts, pid, pepoch, seq, _ = fields
    HEADER.pack_into(out, 0, base, len(out) - LENGTH_FIELD_END, epoch, magic, 0, attributes, last_delta, base_ts,
                     max_ts, pid, pepoch, seq, len(kept))
    crc = lib.shmlog_crc32c(0, ffi.from_buffer(out) + OFF_ATTRIBUTES, len(out) - OFF_ATTRIBUTES)
    out[OFF_CRC:OFF_CRC + 4] = crc.to_bytes(4, "big")
    return bytes(out)


def _is_commit_marker(section, refs):
    if len(refs) != 1:
        return False
    r = refs[0]
    key = bytes(section[r["key_pos"]:r["key_pos"] + r["key_len"]]) if r["key_len"] >= 0 else None
    value = bytes(section[r["value_pos"]:r["value_pos"] + r["value_len"]]) if r["value_len"] >= 0 else None
    try:
        return control_record.decode_marker(key, value)[0]
    except ValueError:
        return False   # a control record we do not know: kept


def _keep_records(fields, section, refs, latest, txns, open_data, horizon):
    """[bool] per record of a batch: whether the cleaned segment keeps it."""
    pid = fields[9]
    if _control(fields):
        # A COMMIT marker goes once it is delete.retention.ms old and no record of its transaction
        # is left (Kafka's rule). ABORT markers stay: the aborted index keeps listing their
        # transaction, and a Kafka client skips its producer's batches from the listed first
        # offset until it reads the ABORT marker.
        needed = open_data.pop(pid, False)
        gone = not needed and fields[8] < horizon and _is_commit_marker(section, refs)
        return [not gone] * len(refs)
    if txns.aborted(fields):
        return [False] * len(refs)
    keep = []
    for offset, ts, key_pos, key_len, value_len in refs[["offset", "timestamp", "key_pos", "key_len",
                                                        "value_len"]].tolist():
        keep.append(key_len >= 0 and latest.get(bytes(section[key_pos:key_pos + key_len]), -1) <= offset
                    and not (value_len < 0 and ts < horizon))
    if fields[5] & ATTR_TRANSACTIONAL and True in keep:
        open_data[pid] = True
    return keep


def _index_bytes(partition_dir, base):
    total = 0
    for path in (index.offset_index_path(partition_dir, base), index.time_index_path(partition_dir, base)):
        try:
            total = max(total, os.path.getsize(path))
        except FileNotFoundError:
            pass
    return total


def group_by_size(partition_dir, segments, policy):
    """Consecutive segments to rewrite as one, as Kafka's groupSegmentsBySize: a group's
    segments together hold at most segment.bytes (their sizes now: earlier cleans shrank
    them), their indexes at most segment.index.bytes each, and its offsets span less than
    2^31 (index entries hold offsets relative to the segment's base as int32)."""
    if policy.segment_bytes <= 0:
        return [[seg] for seg in segments]
    groups = []
    for seg in segments:
        group = groups[-1] if groups else None
        if group is not None and seg.base == group[-1].end and \
                sum(g.size for g in group) + seg.size <= policy.segment_bytes and \
                sum(_index_bytes(partition_dir, g.base) for g in group) + _index_bytes(partition_dir, seg.base) \
                <= policy.segment_index_bytes and seg.end - group[0].base < 2**31:
            group.append(seg)
        else:
            groups.append([seg])
    return groups


def _clean_group(partition_dir, group, latest, txns, open_data, horizon, interval, charge, result):
    """Rewrite a group of consecutive segments as one segment named after the first (a group
    of one is rewritten only when it loses records)."""
    records = _Records()
    mapped_all, out, removed = [], [], 0
    try:
        for n, seg in enumerate(group):
            try:
                mapped = _open_segment(segment_path(partition_dir, seg.base))
            except FileNotFoundError:
                if n == 0:
                    return   # retention deleted it
                group = group[:n]   # retention cannot delete past a segment it kept: stop the group here
                break
            mapped_all.append(mapped)
            batches = _batches(mapped, seg.base)
            first_of_group, last_of_group = n == 0, n == len(group) - 1
            for i, (pos, nbytes, fields) in enumerate(batches):
                charge(nbytes)
                batch = memoryview(mapped.mm)[pos:pos + nbytes]
                if fields[12] == 0:
                    if _control(fields):
                        open_data.pop(fields[9], None)   # a marker an earlier clean emptied still ends its transaction
                    out.append((batch, fields))
                    continue
                section, refs, start = records.decode(mapped, pos, nbytes, fields)
                keep = _keep_records(fields, section, refs, latest, txns, open_data, horizon)
                gone = keep.count(False)
                if not gone:
                    out.append((batch, fields))
                    continue
                removed += gone
                edge = (first_of_group and i == 0) or (last_of_group and i == len(batches) - 1)
                if gone == len(keep) and not edge and \
                        (_control(fields) or txns.last_of_producer.get(fields[9]) != fields[0]):
                    continue   # emptied, and neither the segment's first or last batch nor its producer's last
                out.append((_rebuild(batch, fields, section, start, refs, keep), fields))
            result.segments_read += 1
            result.bytes_read += mapped.size
        if not removed and len(group) == 1:
            return
        written = _write_cleaned(partition_dir, group[0].base, out, interval, charge)
    finally:
        for mapped in mapped_all:
            mapped.close()
    _crash_point("after-cleaned")
    if _swap_in(partition_dir, group[0].base, [seg.base for seg in group[1:]]):
        result.segments_rewritten += 1
        result.segments_merged += len(group) - 1
        result.records_removed += removed
        result.bytes_written += written
    else:
        result.bytes_written += sum(seg.size for seg in group)   # deleted by retention meanwhile


def _write_cleaned(partition_dir, base, batches, interval, charge=None):
    """Write `<base>.log.cleaned` and its indexes (fsynced); returns the log's size."""
    path = segment_path(partition_dir, base) + CLEANED
    builder = index.IndexBuilder(base, interval)
    offset_entries, time_entries = [], []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        pending, pending_bytes, size = [], 0, 0
        for batch, fields in batches:
            o, t = builder.note(size, len(batch), fields[0] + fields[6], fields[8])
            if o is not None:
                offset_entries.append(o)
            if t is not None:
                time_entries.append(t)
            pending.append(batch)
            pending_bytes += len(batch)
            size += len(batch)
            if pending_bytes >= _WRITE_CHUNK:
                _write_all(fd, pending)
                if charge is not None:
                    charge(pending_bytes)
                pending, pending_bytes = [], 0
        _write_all(fd, pending)
        if charge is not None:
            charge(pending_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)
    final = builder.final_time_entry()
    if final is not None:
        time_entries.append(final)
    for target, entries in ((index.offset_index_path(partition_dir, base), offset_entries),
                            (index.time_index_path(partition_dir, base), time_entries)):
        ifd = os.open(target + CLEANED, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_all(ifd, entries)
            os.fsync(ifd)
        finally:
            os.close(ifd)
    return size


def _write_all(fd, pieces):
    data = b"".join(pieces)
    view, done = memoryview(data), 0
    while done < len(data):
        done += os.write(fd, view[done:])


def _swap_in(partition_dir, base, covered=()):
    """.cleaned -> .swap -> exchanged with the live files; False if the segment was deleted meanwhile.

    covered: the bases of the segments merged into this one, unlinked after the log's
    exchange. Until they are gone their offsets are in two files, the same records in each
    (readers look offsets up, so neither is read twice; recovery reports the overlap); the
    log's .swap (the old file) is unlinked last, so a crash before leaves it as the sign for
    recover_swaps() to finish the unlinking."""
    log_path = segment_path(partition_dir, base)
    paths = [log_path, index.offset_index_path(partition_dir, base), index.time_index_path(partition_dir, base)]
    for p in paths:
        os.replace(p + CLEANED, p + SWAP)
    _fsync_dir(partition_dir)
    _crash_point("after-swap-rename")
    try:
        exchange(log_path + SWAP, log_path)
    except FileNotFoundError:
        for p in paths:
            _unlink_quietly(p + SWAP)
        return False
    _crash_point("after-log-exchange")
    for other in covered:
        _unlink_segment(partition_dir, other)
        _crash_point("after-covered-unlink")
    for p in paths[1:]:
        try:
            exchange(p + SWAP, p)
        except FileNotFoundError:
            pass   # retention removed the segment after its log was swapped
    for p in paths[1:] + paths[:1]:
        _unlink_quietly(p + SWAP)   # the old files now (gone already where exchange was not possible)
    _fsync_dir(partition_dir)
    return True


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
