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


def check(one, max_message_bytes):
    fields = rb.HEADER.unpack_from(one, 0)
    magic, attributes, last_delta, count = fields[3], fields[5], fields[6], fields[12]
    if magic != rb.MAGIC:
        raise BadBatch(UNSUPPORTED_FOR_MESSAGE_FORMAT, f"record batch magic {magic}: only magic {rb.MAGIC} "
                                                       f"(RecordBatch v2) is accepted")
    if len(one) > max_message_bytes:
        raise BadBatch(MESSAGE_TOO_LARGE, f"a record batch of {len(one)} bytes exceeds max.message.bytes="
                                          f"{max_message_bytes}")
    if attributes & rb.ATTR_CONTROL:
        raise BadBatch(INVALID_RECORD, "a control batch: only the transaction coordinator writes those")
    producer_id, producer_epoch, base_sequence = fields[9], fields[10], fields[11]
    if producer_id >= 0 and (producer_epoch < 0 or base_sequence < 0):
        raise BadBatch(INVALID_RECORD, f"an idempotent batch (producer id {producer_id}) needs a producer epoch "
                                       f"and base sequence >= 0, not {producer_epoch} and {base_sequence}")
    if attributes & rb.ATTR_TRANSACTIONAL and producer_id < 0:
        raise BadBatch(INVALID_RECORD, "a transactional batch without a producer id")
    if count < 1 or last_delta != count - 1:
        raise BadBatch(INVALID_RECORD, f"record count {count} and last offset delta {last_delta} disagree "
                                       f"(a produced batch holds records at offset deltas 0..count-1)")
    if attributes & rb.ATTR_COMPRESSION_MASK:
        from shmlog.log import codec
        try:
            _, refs = codec.decode_compressed_batch(one, True)
        except codec.CodecError as exc:
            raise BadBatch(CORRUPT_MESSAGE, f"compressed batch refused: {exc}") from None
        decoded = len(refs)
    else:
        refs = ffi.new("shmlog_record_ref[]", count) if count <= len(one) else None
        if refs is None:
            raise BadBatch(CORRUPT_MESSAGE, f"record count {count} cannot fit in {len(one)} bytes")
        decoded = lib.shmlog_batch_index(ffi.from_buffer(one), len(one), refs, count, 1)
        if decoded < 0:
            raise BadBatch(CORRUPT_MESSAGE, "the batch fails its CRC32C or its records do not decode")
    if decoded != count:
        raise BadBatch(CORRUPT_MESSAGE, f"the batch says it holds {count} records; {decoded} decode")
    return fields
