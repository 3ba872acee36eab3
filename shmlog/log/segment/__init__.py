"""Segment files: the on-disk part of a partition log, as Kafka lays it out.

A partition directory `<log dir>/<topic>-<partition>/` holds `<base offset, 20 digits>.log`
files, each with an offset index (`.index`) and a time index (`.timeindex`) beside it (see
shmlog/log/index.py). A `.log` is Kafka RecordBatch v2 bytes back to back, exactly as producers
wrote them into the ring (without the ring's 8-byte frame prefix), so a segment can be read,
copied or compared batch for batch. The file name is the base offset of its first batch.

Invariants, relied on by recovery and readers:
- inside a segment, offsets are dense: a batch's base offset is the previous batch's
  base + lastOffsetDelta + 1, and the first batch's base is the file name; except in a
  sealed segment the log cleaner rewrote (shmlog/log/cleaner.py): its batches keep their
  offsets, so it may skip offsets between batches (and inside one), never go back, and
  its first batch is still the one the file is named after;
- between segments there may be a gap (data a previous run lost is logged and skipped; a
  new segment starts at the next offset the ring holds), never an overlap;
- only the newest segment is ever appended to, and a segment is sealed (final time index
  entry, indexes fsynced) and fdatasync'ed before the writer moves on to the next one, so
  after a crash only the newest can have a torn tail;
- the newest segment always exists once anything was written, even when retention deleted
  every record: its name then records the log end offset, so offsets continue after a
  restart instead of starting over.

The persister is the only writer (SegmentWriter); consumers that fell behind the ring read
with SegmentReader from other processes while the persister appends.

Modules: format (names and paths, the batch checks and walk), writer (SegmentWriter),
reader (SegmentReader), recovery (recover). Reading a partition across its ring and its
segments (read_partition, offset_for_time) lives in shmlog/log/partition_reader.py.
"""
from shmlog.log.segment.format import (
    INDEX_INTERVAL_BYTES,
    SUFFIX,
    _BadBatch,
    _batch_matches,
    _batch_max_timestamp,
    _check_batch,
    _Mapped,
    _unlink_segment,
    _walk,
    list_segments,
    log_end_offset,
    log_start_offset,
    partition_dir,
    segment_name,
    segment_path,
)
from shmlog.log.segment.reader import JUMP_MIN_BYTES, SegmentReader, first_offset_at_or_after
from shmlog.log.segment.recovery import SegmentInfo, recover
from shmlog.log.segment.writer import NO_ROLL_MS, SEGMENT_INDEX_BYTES, PartitionBusy, SegmentWriter, SyncFailed

__all__ = [
    "INDEX_INTERVAL_BYTES", "JUMP_MIN_BYTES", "NO_ROLL_MS", "PartitionBusy", "SEGMENT_INDEX_BYTES", "SUFFIX",
    "SegmentInfo", "SegmentReader", "SegmentWriter", "SyncFailed", "_BadBatch", "_Mapped", "_batch_matches",
    "_batch_max_timestamp",
    "_check_batch", "_unlink_segment", "_walk", "first_offset_at_or_after", "list_segments", "log_end_offset",
    "log_start_offset", "partition_dir", "recover", "segment_name", "segment_path",
]
