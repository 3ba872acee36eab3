"""Validating the record batches a Kafka client produces before they go into a ring.

Nothing a client sends is trusted: each batch must be a whole RecordBatch v2 (magic 2) whose
sizes agree with each other, whose CRC32C matches and whose records decode (the same C index
and codecs the consumers use, so a batch accepted here is one every reader can read). Its
base offset, leader epoch and CRC are rewritten by the ring's append, which assigns offsets.
"""
import struct

from shmlog._native import ffi, lib
from shmlog.log import batch as rb

_PREFIX = struct.Struct(">qi")
# Kafka's error codes for a refused batch
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
UNSUPPORTED_FOR_MESSAGE_FORMAT = 43
INVALID_RECORD = 87


class BadBatch(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def split(records, max_message_bytes):
    """The batches of a produce request's records field, each checked: [(memoryview, fields)] where
    fields is the HEADER tuple. BadBatch(code, why) for the first one that is not acceptable."""
    if not records:
        raise BadBatch(INVALID_RECORD, "the request holds no record batch")
    view = memoryview(records)
    out = []
    pos = 0
    while pos < len(view):
        if len(view) - pos < rb.HEADER_BYTES:
            raise BadBatch(CORRUPT_MESSAGE, f"{len(view) - pos} bytes at position {pos} are too few for a "
                                            f"record batch header ({rb.HEADER_BYTES} bytes)")
        _, length = _PREFIX.unpack_from(view, pos)
        total = rb.LENGTH_FIELD_END + length
        if total < rb.HEADER_BYTES or pos + total > len(view):
            raise BadBatch(CORRUPT_MESSAGE, f"the batch at position {pos} says it is {total} bytes long; "
                                            f"{len(view) - pos} bytes are left in the request")
        one = view[pos:pos + total]
        out.append((one, check(one, max_message_bytes)))
        pos += total
    return out


def check_one(records, max_message_bytes):
    """The HEADER fields of `records` when it is exactly one batch and check() accepts it, else None."""
    if len(records) < rb.HEADER_BYTES or rb.LENGTH_FIELD_END + _PREFIX.unpack_from(records, 0)[1] != len(records):
        return None
    try:
        return check(records, max_message_bytes)
    except BadBatch:
        return None


def check(one, max_message_bytes):
    """The batch's HEADER fields once it passes every rule (shmlog_batch_check: the rules and
    their order are the C core's), else BadBatch naming the rule it breaks."""
    fault = lib.shmlog_batch_check(ffi.from_buffer(one), len(one), max_message_bytes)
    fields = rb.HEADER.unpack_from(one, 0)
    if fault == lib.SHMLOG_BATCH_ACCEPTED:
        return fields
    if fault == lib.SHMLOG_BATCH_COMPRESSED:
        _check_compressed(one, fields[12])
        return fields
    if fault == lib.SHMLOG_ENOMEM:
        raise MemoryError(f"no memory to index a record batch of {len(one)} bytes")
    code, why = _FAULTS[fault]
    raise BadBatch(code, why(fields, len(one), max_message_bytes))


def _check_compressed(one, count):
    from shmlog.log import codec
    try:
        _, refs = codec.decode_compressed_batch(one, True)
    except codec.CodecError as exc:
        raise BadBatch(CORRUPT_MESSAGE, f"compressed batch refused: {exc}") from None
    if len(refs) != count:
        raise BadBatch(CORRUPT_MESSAGE, f"the batch says it holds {count} records; {len(refs)} decode")


# shmlog_batch_check's faults: (Kafka's error code, why in words from the HEADER fields, size, limit)
_FAULTS = {
    lib.SHMLOG_BATCH_BAD_MAGIC: (UNSUPPORTED_FOR_MESSAGE_FORMAT, lambda f, size, limit: (
        f"record batch magic {f[3]}: only magic {rb.MAGIC} (RecordBatch v2) is accepted")),
    lib.SHMLOG_BATCH_TOO_LARGE: (MESSAGE_TOO_LARGE, lambda f, size, limit: (
        f"a record batch of {size} bytes exceeds max.message.bytes={limit}")),
    lib.SHMLOG_BATCH_CONTROL: (INVALID_RECORD, lambda f, size, limit: (
        "a control batch: only the transaction coordinator writes those")),
    lib.SHMLOG_BATCH_NO_EPOCH_OR_SEQUENCE: (INVALID_RECORD, lambda f, size, limit: (
        f"an idempotent batch (producer id {f[9]}) needs a producer epoch and base sequence >= 0, "
        f"not {f[10]} and {f[11]}")),
    lib.SHMLOG_BATCH_TRANSACTIONAL_WITHOUT_PRODUCER: (INVALID_RECORD, lambda f, size, limit: (
        "a transactional batch without a producer id")),
    lib.SHMLOG_BATCH_COUNT_DISAGREES: (INVALID_RECORD, lambda f, size, limit: (
        f"record count {f[12]} and last offset delta {f[6]} disagree (a produced batch holds records at "
        f"offset deltas 0..count-1)")),
    lib.SHMLOG_BATCH_COUNT_CANNOT_FIT: (CORRUPT_MESSAGE, lambda f, size, limit: (
        f"record count {f[12]} cannot fit in {size} bytes")),
    lib.SHMLOG_BATCH_CORRUPT: (CORRUPT_MESSAGE, lambda f, size, limit: (
        "the batch fails its CRC32C or its records do not decode")),
}
