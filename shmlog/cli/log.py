"""`shmlog dump-log FILE...`: print segment files batch by batch, like Kafka's kafka-dump-log;
`shmlog verify-log --data-dir D`: check every batch of every partition's segments.

A `.log` prints one line per batch (offsets, producer fields, position, timestamp, size,
codec, CRC and whether it checks out), after a `Cleaned:` line when the log cleaner has
worked on the partition (offsets missing between a cleaned segment's batches are counted,
not reported as problems); --deep-iteration adds a line per record and
--print-data-log its key and value. An `.index` or `.timeindex` prints its entries and
checks each against the `.log` beside it. A `.snapshot` (producer state,
shmlog/log/producer_state.py) prints one line per producer id, as kafka-dump-log does.
Whatever does not check out (a CRC mismatch, a torn or invalid tail, an offset gap, an index
entry that points nowhere) is reported and makes the exit status 1.

verify-log (like kafka-dump-log --deep-iteration over a whole log) walks every segment of
each partition with the segment walk recovery and readers use, CRC32C included, and checks
dense offsets inside segments (sealed segments may skip offsets: the log cleaner removes
records) and across them, every offset and time index entry; one line
per problem (file, byte position, offsets affected), a summary, exit status 1 on any
problem. It only reads, so it works on a stopped broker and on a running one.
"""
import os

import click
import numpy as np

from shmlog._native import ffi, lib
from shmlog.cli._common import Failure, data_dir_option, table
from shmlog.log import cleaner, index, producer_state, segment
from shmlog.log.batch import (
    ATTR_COMPRESSION_MASK,
    ATTR_CONTROL,
    ATTR_LOG_APPEND_TIME,
    ATTR_TRANSACTIONAL,
    HEADER,
    decode_headers,
)

_CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


class _Dump:
    def __init__(self, deep, data):
        self.deep = deep or data
        self.data = data
        self.problems = 0

    def problem(self, text):
        self.problems += 1
        click.echo(text)


def _text(data):
    if data is None:
        return "null"
    raw = bytes(data)
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return raw.hex()
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def _records(batch, attributes, count):
    """(records view, refs) of one batch; refs relative to the view. Raises ValueError."""
    from shmlog._native.layout import RECORD_REF_DTYPE
    refs = np.empty(max(count, 1), RECORD_REF_DTYPE)
    if attributes & ATTR_COMPRESSION_MASK:
        from shmlog.log.codec import CodecError, index_compressed_batch
        try:
            records, n = index_compressed_batch(batch, refs, False)
        except CodecError as exc:
            raise ValueError(str(exc)) from None
        return records, refs[:n]
    src = ffi.from_buffer(batch)
    n = lib.shmlog_batch_index(src, len(batch), ffi.from_buffer("shmlog_record_ref[]", refs), len(refs), 0)
    if n < 0:
        raise ValueError("records do not parse")
    return batch, refs[:n]


def _headers(buf, pos, count):
    return [key for key, _ in decode_headers(buf, pos, count)]


def _dump_log(path, out):
    base = int(os.path.basename(path)[:20]) if os.path.basename(path)[:20].isdigit() else None
    click.echo(f"Dumping {path}")
    click.echo(f"Log starting offset: {base if base is not None else 'unknown (not a segment file name)'}")
    cleaned = _cleaned(path, base)
    if cleaned is not None:
        click.echo(f"Cleaned: {'yes' if cleaned[0] else 'no'} (log cleaner checkpoint {cleaned[1]})")
    gaps = bool(cleaned and cleaned[0])
    mapped = segment._Mapped.of_path(path)
    try:
        buf, ptr, end = mapped.mm, mapped.ptr, mapped.size
        pos, expected, batches, records, removed = 0, base, 0, 0, 0
        while pos < end:
            try:
                batch_bytes, first, count, _ = segment._check_batch(buf, ptr, pos, end, None, False)
            except segment._BadBatch as bad:
                out.problem(f"Found {end - pos} invalid bytes at the end of {os.path.basename(path)} "
                            f"(at position {pos}: {bad.reason})")
                break
            (_, _, epoch, magic, crc, attributes, last_delta, base_ts, max_ts, producer_id, producer_epoch,
             base_sequence, record_count) = HEADER.unpack_from(buf, pos)
            valid = lib.shmlog_batch_verify(ptr + pos, batch_bytes, 1) == lib.SHMLOG_OK
            if expected is not None and first != expected:
                if gaps and first > expected:
                    removed += first - expected   # records the log cleaner removed
                else:
                    out.problem(f"offset gap: expected base offset {expected} at position {pos}, found {first}")
            transactional = bool(attributes & ATTR_TRANSACTIONAL)
            control = bool(attributes & ATTR_CONTROL)
            ts_type = "LogAppendTime" if attributes & ATTR_LOG_APPEND_TIME else "CreateTime"
            codec = attributes & ATTR_COMPRESSION_MASK
            last_sequence = base_sequence + last_delta if base_sequence >= 0 else -1
            click.echo(f"baseOffset: {first} lastOffset: {first + last_delta} count: {record_count} "
                       f"baseSequence: {base_sequence} lastSequence: {last_sequence} producerId: {producer_id} "
                       f"producerEpoch: {producer_epoch} partitionLeaderEpoch: {epoch} "
                       f"isTransactional: {str(transactional).lower()} isControl: {str(control).lower()} "
                       f"position: {pos} {ts_type}: {max_ts} size: {batch_bytes} magic: {magic} "
                       f"compresscodec: {_CODECS.get(codec, codec)} crc: {crc} "
                       f"isvalid: {str(valid).lower()}")
            if not valid:
                out.problem(f"CRC32C mismatch in the batch at position {pos} (base offset {first})")
            if out.deep and valid and record_count:
                view = memoryview(buf)[pos:pos + batch_bytes]
                try:
                    data, refs = _records(view, attributes, record_count)
                except ValueError as exc:
                    out.problem(f"the records of the batch at position {pos} do not parse: {exc}")
                else:
                    for off, ts, kp, kl, vp, vl, hp, hc in refs.tolist():
                        line = (f"| offset: {off} {ts_type}: {ts} keySize: {kl} valueSize: {vl} "
                                f"sequence: {base_sequence + off - first if base_sequence >= 0 else -1} "
                                f"headerKeys: [{','.join(_headers(data, hp, hc))}]")
                        if out.data:
                            key = None if kl < 0 else data[kp:kp + kl]
                            value = None if vl < 0 else data[vp:vp + vl]
                            line += f" key: {_text(key)} payload: {_text(value)}"
                        click.echo(line)
                        records += 1
            batches += 1
            pos += batch_bytes
            expected = first + count
        click.echo(f"{batches} batches, {pos} bytes" + (f", {records} records" if out.deep else "")
                   + (f", next offset {expected}" if expected is not None else "")
                   + (f", {removed} offsets between batches removed by compaction" if removed else ""))
    finally:
        mapped.close()


def _cleaned(path, base):
    """(cleaned, checkpoint) for a segment file in a partition directory the log cleaner has
    worked on: cleaned when the segment lies wholly below its checkpoint; None otherwise."""
    pdir = os.path.dirname(os.path.abspath(path))
    if base is None or not os.path.exists(os.path.join(pdir, cleaner.CHECKPOINT_NAME)):
        return None
    checkpoint = cleaner.read_checkpoint(pdir)
    later = [b for b in segment.list_segments(pdir) if b > base]
    return (bool(later) and later[0] <= checkpoint), checkpoint


def _log_beside(path):
    log_path = os.path.splitext(path)[0] + segment.SUFFIX
    return log_path if os.path.exists(log_path) else None


def _dump_index(path, out, time_index):
    base = int(os.path.basename(path)[:20])
    click.echo(f"Dumping {path}")
    dtype = index.TIME_DTYPE if time_index else index.OFFSET_DTYPE
    size = os.path.getsize(path)
    entries = index.read_entries(path, dtype)
    if size % dtype.itemsize:
        out.problem(f"{size % dtype.itemsize} bytes at the end are not a whole entry")
    log_path = _log_beside(path)
    mapped = segment._Mapped.of_path(log_path) if log_path else None
    try:
        previous = None
        for entry in entries.tolist():
            if time_index:
                ts, rel = entry
                click.echo(f"timestamp: {ts} offset: {base + rel}")
                if previous is not None and ts <= previous:
                    out.problem(f"timestamp {ts} is not above the previous entry's {previous}")
                previous = ts
            else:
                rel, pos = entry
                click.echo(f"offset: {base + rel} position: {pos}")
                if mapped is not None and not segment._batch_matches(mapped, pos, base + rel):
                    out.problem(f"no batch ending at offset {base + rel} starts at position {pos} of {log_path}")
                if previous is not None and rel <= previous:
                    out.problem(f"offset {base + rel} is not above the previous entry's {base + previous}")
                previous = rel
        if not log_path:
            click.echo(f"(no {segment.SUFFIX} beside it: entries not checked against the log)")
        click.echo(f"{len(entries)} entries")
    finally:
        if mapped is not None:
            mapped.close()


def _dump_snapshot(path, out):
    click.echo(f"Dumping {path}")
    name = os.path.basename(path)[:-len(producer_state.SUFFIX)]
    try:
        state = producer_state.read_snapshot(os.path.dirname(path), int(name))
    except (ValueError, producer_state.BadSnapshot) as exc:
        out.problem(f"{path}: not a usable producer snapshot: {exc}")
        return
    for e in sorted(state.producers.values(), key=lambda e: e.producer_id):
        click.echo(f"producerId: {e.producer_id} producerEpoch: {e.producer_epoch} coordinatorEpoch: -1 "
                   f"currentTxnFirstOffset: None lastTimestamp: {e.last_timestamp} "
                   f"firstSequence: {(e.last_sequence - e.offset_delta) & producer_state.SEQUENCE_MASK} "
                   f"lastSequence: {e.last_sequence} lastOffset: {e.last_offset} offsetDelta: {e.offset_delta}")


@click.command("dump-log")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--deep-iteration", is_flag=True, help="Print every record (offset, timestamp, sizes), not only batches.")
@click.option("--print-data-log", is_flag=True, help="Print every record with its key and value "
              "(implies --deep-iteration).")
def dump_log(files, deep_iteration, print_data_log):
    """Print segment files (.log, .index, .timeindex, .snapshot) batch by batch and check them, like kafka-dump-log.

    Exit status 1 when anything does not check out (CRC, torn tail, offset gap, index entry).
    """
    out = _Dump(deep_iteration, print_data_log)
    for i, path in enumerate(files):
        if i:
            click.echo("")
        if path.endswith(index.OFFSET_SUFFIX):
            _dump_index(path, out, time_index=False)
        elif path.endswith(index.TIME_SUFFIX):
            _dump_index(path, out, time_index=True)
        elif path.endswith(producer_state.SUFFIX):
            _dump_snapshot(path, out)
        else:
            _dump_log(path, out)
    if out.problems:
        click.get_current_context().exit(1)


# ---------------------------------------------------------------------- verify-log

TORN_TAIL_RETRIES = 3   # a running persister may be writing the newest segment's last batch


class _Verify:
    def __init__(self):
        self.problems = self.partitions = self.segments = self.batches = self.bytes = 0

    def problem(self, text):
        self.problems += 1
        click.echo(text)


def _partition_dirs(log_dirs, topic, partition):
    """[(topic, partition, path)] of the partition directories in log_dirs, sorted."""
    found = []
    for log_dir in log_dirs:
        try:
            names = os.listdir(log_dir)
        except FileNotFoundError:
            raise click.UsageError(f"log dir {log_dir} does not exist") from None
        for name in names:
            name_topic, _, number = name.rpartition("-")
            path = os.path.join(log_dir, name)
            if not name_topic or not number.isdigit() or not os.path.isdir(path):
                continue  # not a partition (a deleted topic's directory ends in -delete)
            if (topic is None or name_topic == topic) and (partition is None or int(number) == partition):
                found.append((name_topic, int(number), path))
    return sorted(found)


def _verify_segment(out, path, base, newest, next_base):
    """Check one segment's batches (CRC32C, dense offsets) and indexes; the offset it ends at
    as far as it reads (next_base when damage hides the rest), or None if it is gone."""
    try:
        mapped = segment._Mapped.of_path(path)
    except FileNotFoundError:
        return None  # retention deleted it while we looked
    starts = {}   # position -> last offset of the batch there

    def on_batch(pos, batch_bytes, last_offset, _ts):
        starts[pos] = last_offset
        out.batches += 1
        out.bytes += batch_bytes

    def on_bad(pos, bad):
        batch_bytes, first, count = bad.batch
        starts[pos] = first + count - 1
        out.problem(f"{path}: byte {pos}: offsets {first}..{first + count - 1}: {bad.reason}")

    try:
        # A sealed segment may be one the log cleaner rewrote: offsets may skip between its batches.
        valid, end, bad = segment._walk(mapped, base, True, on_batch, on_bad=on_bad, gaps=not newest)
        for _ in range(TORN_TAIL_RETRIES):
            if bad is None or not bad.torn or not newest:
                break
            # The newest segment's last batch may be half written by a running persister: look again.
            fresh = segment._Mapped.of_path(path)
            if fresh.size <= mapped.size:
                fresh.close()
                break
            mapped.close()
            mapped = fresh
            valid, end, bad = segment._walk(mapped, end, True, on_batch, start=valid, on_bad=on_bad, gaps=not newest)
        size = mapped.size
    finally:
        mapped.close()
    if bad is not None:
        upto = f"{next_base - 1}" if next_base is not None else "the log end"
        hint = " (a torn tail: the next recovery cuts it)" if newest and bad.torn else ""
        out.problem(f"{path}: byte {valid} of {size}: offsets {end}..{upto}: {bad.reason}{hint}")
    _verify_indexes(out, path, base, starts, valid, end, newest)
    if bad is not None and next_base is not None:
        return next_base
    return end


def _verify_indexes(out, path, base, starts, valid_bytes, end, newest):
    stem = os.path.splitext(path)[0]
    for suffix, dtype in ((index.OFFSET_SUFFIX, index.OFFSET_DTYPE), (index.TIME_SUFFIX, index.TIME_DTYPE)):
        index_path = stem + suffix
        try:
            size = os.path.getsize(index_path)
            entries = index.read_entries(index_path, dtype)
        except FileNotFoundError:
            out.problem(f"{index_path}: missing (recovery rebuilds it)")
            continue
        if size % dtype.itemsize:
            out.problem(f"{index_path}: {size % dtype.itemsize} bytes at the end are not a whole entry")
        previous = None
        for i, entry in enumerate(entries.tolist()):
            if suffix == index.OFFSET_SUFFIX:
                rel, pos = entry
                if newest and pos >= valid_bytes:
                    continue  # written after we walked the log (a running persister)
                if starts.get(pos) != base + rel:
                    out.problem(f"{index_path}: entry {i}: no batch ending at offset {base + rel} starts at byte "
                                f"{pos} of the log")
                if previous is not None and (rel <= previous[0] or pos <= previous[1]):
                    out.problem(f"{index_path}: entry {i}: offset {base + rel} at byte {pos} is not past the "
                                f"previous entry's offset {base + previous[0]} at byte {previous[1]}")
                previous = (rel, pos)
            else:
                ts, rel = entry
                if newest and base + rel >= end:
                    continue
                if rel < 0 or base + rel >= end:
                    out.problem(f"{index_path}: entry {i}: offset {base + rel} is outside the segment "
                                f"({base}..{end - 1})")
                if previous is not None and (ts <= previous[0] or rel < previous[1]):
                    out.problem(f"{index_path}: entry {i}: timestamp {ts} at offset {base + rel} does not follow "
                                f"timestamp {previous[0]} at offset {base + previous[1]} (must increase)")
                previous = (ts, rel)


def _verify_partition(out, pdir):
    bases = segment.list_segments(pdir)
    out.partitions += 1
    previous_end, previous_base = None, None
    for i, base in enumerate(bases):
        path = segment.segment_path(pdir, base)
        next_base = bases[i + 1] if i + 1 < len(bases) else None
        if previous_end is not None and previous_end != base:
            if previous_end < base:
                out.problem(f"{pdir}: offsets {previous_end}..{base - 1}: in no segment (between "
                            f"{segment.segment_name(previous_base)} and {segment.segment_name(base)}: a deleted or "
                            f"truncated segment, or offsets an earlier run lost)")
            else:
                out.problem(f"{path}: offsets {base}..{previous_end - 1}: also in "
                            f"{segment.segment_name(previous_base)} (segments overlap)")
        end = _verify_segment(out, path, base, next_base is None, next_base)
        if end is None:
            continue
        out.segments += 1
        previous_end, previous_base = end, base


@click.command("verify-log")
@click.option("--data-dir", "data_dir", envvar="SHMLOG_DATA_DIR", required=True,
              type=click.Path(exists=True, file_okay=False), help="The broker's data directory ($SHMLOG_DATA_DIR).")
@click.option("--log-dir", "log_dirs", multiple=True,
              help="A log dir to check, relative to the data dir or absolute (repeatable; default: logs, "
                   "the default log.dirs).")
@click.option("--topic", default=None, help="Only this topic's partitions.")
@click.option("--partition", type=int, default=None, help="Only this partition (of --topic, or of every topic).")
def verify_log(data_dir, log_dirs, topic, partition):
    """Check every batch of a data dir's partition logs: CRC32C, dense offsets, indexes.

    One line per problem (file, byte position, offsets affected), then a summary; exit
    status 1 on any problem. Read-only: works on a stopped broker and on a running one.
    """
    data_dir = os.path.realpath(data_dir)
    dirs = [os.path.realpath(os.path.join(data_dir, d)) for d in (log_dirs or ["logs"])]
    out = _Verify()
    for _, _, pdir in _partition_dirs(dirs, topic, partition):
        _verify_partition(out, pdir)
    click.echo(f"verify-log: {out.partitions} partition{'s' if out.partitions != 1 else ''}, {out.segments} "
               f"segments, {out.batches} batches, {out.bytes} bytes checked; {out.problems} "
               f"problem{'s' if out.problems != 1 else ''}")
    if out.problems:
        click.get_current_context().exit(1)


# ---------------------------------------------------------------------- the log cleaner

@click.group("log")
def log_group():
    """The log cleaner: its status, and a clean run by hand."""


def _ago(ms):
    if not ms:
        return "never"
    import time
    return f"{max(0, time.time() - ms / 1000):.0f} s ago"


@log_group.command("cleaner-status")
@data_dir_option()
def cleaner_status(data_dir):
    """One line per compacted partition (and follower replica): dirty ratio, last clean, bytes reclaimed."""
    from shmlog.broker import cleaner as cleaner_process
    st = cleaner_process.read(os.path.realpath(data_dir))
    if st is None:
        raise Failure(f"no log cleaner status in {data_dir} (the broker has not run a cleaner there yet)")
    totals = st.get("totals") or {}
    click.echo(f"log cleaner pid {st.get('pid')} ({'enabled' if st.get('enabled') else 'disabled'}), "
               f"status written {_ago(st.get('written_ms'))}: {totals.get('cleans', 0)} cleans, "
               f"{totals.get('bytes_reclaimed', 0)} bytes reclaimed, {totals.get('records_removed', 0)} records "
               f"removed, {totals.get('errors', 0)} errors")
    rows = []
    for name, p in sorted((st.get("partitions") or {}).items()) + sorted((st.get("followers") or {}).items()):
        rows.append([name, f"{p.get('dirty_ratio', 0):.3f}", p.get("min_cleanable_dirty_ratio", ""),
                     p.get("dirty_bytes", 0), p.get("clean_bytes", 0), p.get("first_dirty_offset", 0),
                     _ago(p.get("last_clean_ms")), p.get("bytes_reclaimed", 0), p.get("error") or ""])
    if rows:
        click.echo(table(["PARTITION", "DIRTY RATIO", "MIN RATIO", "DIRTY BYTES", "CLEAN BYTES", "FIRST DIRTY",
                          "LAST CLEAN", "RECLAIMED", "ERROR"], rows))
