"""The ring in one process: claim/publish/fetch, padding, full ring, dead claims, garbage."""
import os
import time

import pytest

from shmlog._native import ffi, lib, procs
from shmlog._native import ring as ring_mod
from shmlog._native.ring import Ring
from shmlog._native.shm import unlink
from shmlog.errors import KafkaError, KafkaException

CAPACITY = 65536


@pytest.fixture
def ring(request):
    name = f"/shmlog.test{os.getpid()}.{abs(hash(request.node.name)) % 10**8}"
    unlink(name)
    r = Ring.create(name, CAPACITY, "t", 1, 0, start_offset=0)
    yield r
    r.close()
    unlink(name)


def encode(values):
    lens = ffi.new("int32_t[]", [len(v) for v in values])
    blob = b"".join(values)
    size = lib.shmlog_records_encode(ffi.NULL, 0, len(values), ffi.NULL, ffi.NULL, blob, lens, ffi.NULL, 0,
                                     ffi.NULL, ffi.NULL)
    out = bytearray(size)
    lib.shmlog_records_encode(ffi.from_buffer(out), size, len(values), ffi.NULL, ffi.NULL, blob, lens,
                              ffi.NULL, 0, ffi.NULL, ffi.NULL)
    return out


def append(ring, slot, values, timeout_ms=0):
    records = encode(values)
    return ring.append(slot, ffi.from_buffer(records), len(records), len(values), 0, 0, timeout_ms, ffi.NULL)


def read_all(ring, cursor):
    dst = bytearray(CAPACITY)
    frames = ffi.new("shmlog_frame_ref[]", 64)
    refs = ffi.new("shmlog_record_ref[]", 1024)
    out = []
    while True:
        n = ring.fetch(cursor, ffi.from_buffer(dst), len(dst), frames, 64, 1)
        if n <= 0:
            return out
        for f in frames[0:n]:
            k = lib.shmlog_batch_index(ffi.from_buffer(dst) + f.dst_pos, f.batch_bytes, refs, 1024, 1)
            for r in refs[0:k]:
                p = f.dst_pos + r.value_pos
                out.append((r.offset, bytes(dst[p:p + r.value_len])))


def release_all(ring):
    pos, off = ring.end()
    lib.shmlog_ring_release_to(ring.map, pos)


def test_appended_batches_get_dense_offsets_and_read_back_in_order(ring):
    slot = ring.acquire_producer_slot()
    assert append(ring, slot, [b"a", b"b"]) == 0
    assert append(ring, slot, [b"c"]) == 2
    cursor = ffi.new("shmlog_cursor *")
    assert read_all(ring, cursor) == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert cursor.next_offset == 3


def test_reads_are_non_destructive_at_independent_positions(ring):
    slot = ring.acquire_producer_slot()
    for i in range(5):
        append(ring, slot, [b"%d" % i])
    first, second = ffi.new("shmlog_cursor *"), ffi.new("shmlog_cursor *")
    assert [o for o, _ in read_all(ring, first)] == [0, 1, 2, 3, 4]
    assert [o for o, _ in read_all(ring, second)] == [0, 1, 2, 3, 4]


def test_a_full_ring_refuses_the_append_after_the_timeout_and_keeps_what_it_had(ring):
    slot = ring.acquire_producer_slot()
    value = b"x" * 1000
    accepted = 0
    with pytest.raises(KafkaException) as exc:
        while True:
            append(ring, slot, [value], timeout_ms=1)
            accepted += 1
    assert exc.value.args[0].code() == KafkaError._MSG_TIMED_OUT
    assert "ring full" in str(exc.value)
    cursor = ffi.new("shmlog_cursor *")
    assert [o for o, _ in read_all(ring, cursor)] == list(range(accepted))


def test_frames_never_wrap_padding_fills_the_end_of_the_ring(ring):
    slot = ring.acquire_producer_slot()
    cursor = ffi.new("shmlog_cursor *")
    seen = []
    for i in range(200):
        append(ring, slot, [bytes([i % 256]) * 900])
        seen += read_all(ring, cursor)
        lib.shmlog_ring_release_to(ring.map, cursor.position)
    assert [o for o, _ in seen] == list(range(200))
    assert all(v == bytes([o % 256]) * 900 for o, v in seen)
    assert ring.end()[0] > 2 * CAPACITY


def test_a_batch_larger_than_the_ring_is_refused_with_the_setting_to_raise(ring):
    slot = ring.acquire_producer_slot()
    with pytest.raises(KafkaException) as exc:
        append(ring, slot, [b"x" * CAPACITY])
    assert exc.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert "ring.bytes" in str(exc.value)


def test_a_reader_that_fell_behind_the_ring_is_told_so_not_given_new_bytes(ring):
    slot = ring.acquire_producer_slot()
    stale = ffi.new("shmlog_cursor *")
    for i in range(300):
        append(ring, slot, [b"y" * 500])
        release_all(ring)
    dst = bytearray(CAPACITY)
    frames = ffi.new("shmlog_frame_ref[]", 4)
    assert ring.fetch(stale, ffi.from_buffer(dst), len(dst), frames, 4, 1) == lib.SHMLOG_EOVERWRITTEN
    assert ring.locate(0) is None


def test_locate_finds_a_cursor_at_or_before_an_offset_still_in_the_ring(ring):
    slot = ring.acquire_producer_slot()
    for i in range(300):
        append(ring, slot, [b"%05d" % i + b"z" * 400])
        release_all(ring)
    start_pos, start_off = ring.start()
    assert 0 < start_off < 300
    cursor = ring.locate(250)
    assert cursor is not None and cursor.next_offset <= 250
    values = dict(read_all(ring, cursor))
    assert values[250].startswith(b"00250")


def test_locate_lands_on_the_batch_holding_the_offset_past_the_index_entry_before_it():
    name = f"/shmlog.test{os.getpid()}.locate"
    unlink(name)
    ring = Ring.create(name, 4 << 20, "t", 1, 0, start_offset=0)   # an index entry per 4 KiB of ring
    try:
        slot = ring.acquire_producer_slot()
        for i in range(0, 600, 3):
            append(ring, slot, [b"%05d" % j for j in range(i, i + 3)])   # batches of three small records
        below = max(e.offset for e in ring.map.header.index[0:lib.SHMLOG_INDEX_ENTRIES] if e.offset <= 301)
        assert below <= 297   # whole batches to pass over between the index entry and offset 301
        assert ring.locate(301).next_offset == 300      # the batch of 300, 301, 302
        assert ring.locate(300).next_offset == 300
        assert ring.locate(600).next_offset == 600      # the end
        assert dict(read_all(ring, ring.locate(301)))[301] == b"00301"
    finally:
        ring.close()
        unlink(name)


def test_a_claim_left_by_a_dead_producer_becomes_a_skippable_control_batch(ring):
    slot = ring.acquire_producer_slot()
    append(ring, slot, [b"before"])
    pos, off = ring.end()
    dead = ring.map.producers[slot + 1]
    # Forge what a producer killed right after its claim CAS leaves behind.
    assert lib.shmlog_producer_slot_acquire(ring.map, 2**22 + 1, 1, 99) == slot + 1
    dead.claim_position, dead.claim_offset = pos, off
    dead.claim_frame_bytes, dead.claim_record_count = 128, 3
    dead.state = lib.SHMLOG_SLOT_OWNED
    ring.header.claim.tail_position = pos + 128
    ring.header.claim.next_offset = off + 3
    cursor = ffi.new("shmlog_cursor *")
    assert read_all(ring, cursor) == [(0, b"before")]
    assert ring.repair_if_stuck(cursor.position, ffi.NULL)
    append(ring, slot, [b"after"])
    assert read_all(ring, cursor) == [(4, b"after")]  # offsets 1-3 were the dead claim


def test_garbage_in_the_ring_header_is_refused_with_a_clear_error(ring):
    ring.mapping.mm[0:8] = b"garbage!"
    with pytest.raises(KafkaException) as exc:
        Ring(ring.mapping, "t", 0)
    assert "invalid ring header" in str(exc.value)


def test_random_bytes_in_the_data_area_raise_corruption_never_crash(ring):
    import random
    rnd = random.Random(7)
    slot = ring.acquire_producer_slot()
    for i in range(20):
        append(ring, slot, [b"v" * 100])
    data = ring.data_offset
    for trial in range(200):
        at = data + rnd.randrange(0, 4000)
        ring.mapping.mm[at:at + 16] = bytes(rnd.randrange(256) for _ in range(16))
        cursor = ffi.new("shmlog_cursor *")
        try:
            read_all(ring, cursor)
        except KafkaException as exc:
            assert exc.args[0].code() == KafkaError._BAD_MSG


def forge_live_claim(ring, claim_unix_ns):
    """What a live producer (this process) stopped right after its claim CAS leaves behind."""
    pid, started = procs.me()
    slot = lib.shmlog_producer_slot_acquire(ring.map, pid, started, 4242)
    live = ring.map.producers[slot]
    pos, off = ring.end()
    live.claim_position, live.claim_offset, live.claim_frame_bytes, live.claim_record_count = pos, off, 128, 2
    live.claim_unix_ns = claim_unix_ns
    live.state = lib.SHMLOG_SLOT_OWNED
    ring.header.claim.tail_position, ring.header.claim.next_offset = pos + 128, off + 2
    return slot, pos


def test_a_live_claim_is_fenced_only_once_older_than_the_timeout(ring):
    slot, pos = forge_live_claim(ring, time.time_ns() - 50_000_000)
    assert not ring.repair_if_stuck(pos, ffi.NULL, claim_timeout_ms=10_000)
    assert ring.map.producers[slot].state == lib.SHMLOG_SLOT_OWNED and not ring.has_data(pos)
    assert ring.repair_if_stuck(pos, ffi.NULL, claim_timeout_ms=10)
    assert ring.map.producers[slot].state == lib.SHMLOG_SLOT_FENCED and ring.has_data(pos)
    assert ring.header.release.fenced_claims == 1
    assert lib.shmlog_producer_slot_unfence(ring.map, slot) == 1
    assert ring.header.release.fenced_claims == 0 and ring.map.producers[slot].state == lib.SHMLOG_SLOT_IDLE


def test_every_claim_raises_its_slot_generation_and_leaves_the_state_bits_idle(ring):
    slot = ring.acquire_producer_slot()
    words = []
    for i in range(3):
        append(ring, slot, [b"x%d" % i])
        words.append(ring.map.producers[slot].state)
    assert Ring.slot_state(ring.map.producers[slot]) == lib.SHMLOG_SLOT_IDLE
    assert [w >> lib.SHMLOG_SLOT_GENERATION_SHIFT for w in words] == [1, 2, 3]


def test_a_fence_aimed_at_another_claim_leaves_the_slots_current_claim_alone(ring):
    slot, pos = forge_live_claim(ring, time.time_ns() - 50_000_000)
    assert lib.shmlog_ring_fence_stalled(ring.map, slot, pos + 64, 0, ffi.NULL) == lib.SHMLOG_EAGAIN
    assert ring.map.producers[slot].state == lib.SHMLOG_SLOT_OWNED and ring.header.release.fenced_claims == 0


def test_a_claim_dated_in_the_future_counts_as_fresh(ring):
    slot, pos = forge_live_claim(ring, time.time_ns() + 3600 * 10**9)  # the clock jumped back since
    assert lib.shmlog_ring_fence_stalled(ring.map, slot, pos, 1_000_000, ffi.NULL) == lib.SHMLOG_EAGAIN
    assert ring.map.producers[slot].state == lib.SHMLOG_SLOT_OWNED


@pytest.mark.parametrize("status", sorted(ring_mod.APPEND_ERRORS))
def test_each_append_status_raises_its_kafka_error_naming_the_partition(ring, status):
    code, _ = ring_mod.APPEND_ERRORS[status]
    with pytest.raises(KafkaException) as caught:
        ring._append_failed(status, 100, 5)
    assert caught.value.args[0].code() == code
    assert caught.value.args[0].str().startswith(ring.where())


def test_an_unknown_append_status_is_a_fail_that_names_it(ring):
    with pytest.raises(KafkaException) as caught:
        ring._append_failed(lib.SHMLOG_ENOSLOT, 100, 5)
    assert caught.value.args[0].code() == KafkaError._FAIL
    assert "no free slot" in caught.value.args[0].str()


@pytest.mark.parametrize("status, code", [(lib.SHMLOG_ECORRUPT, KafkaError.KAFKA_STORAGE_ERROR),
                                          (lib.SHMLOG_EAGAIN, KafkaError._MSG_TIMED_OUT),
                                          (lib.SHMLOG_ENOTENOUGHREPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND)])
def test_each_flush_wait_status_is_its_kafka_error(ring, status, code):
    assert ring.flush_wait_error(status, 7).code() == code


def set_replicas(ring, log_dirs, leader=0, isr_mask=None):
    lib.shmlog_ring_set_replication(ring.map, len(log_dirs), 1, (1 << len(log_dirs)) - 1 if isr_mask is None
                                    else isr_mask, leader, 0, ffi.new("uint8_t[]", log_dirs))


def test_a_replicas_fsynced_word_counts_when_the_mirror_of_its_log_dir_published_it(ring):
    set_replicas(ring, [0, 1, 2])
    lib.shmlog_ring_publish_replica_fsynced(ring.map, 1, 1, 1234, ffi.NULL)
    lib.shmlog_ring_publish_replica_fsynced(ring.map, 2, 2, 99, ffi.NULL)
    assert [lib.shmlog_ring_replica_fsynced(ring.map, i) for i in (1, 2)] == [1234, 99]


def test_a_late_word_of_a_replica_moved_to_another_log_dir_counts_for_nothing(ring):
    set_replicas(ring, [0, 1, 2])
    ring.header.replication.replica_fsynced_offset[1] = 0
    set_replicas(ring, [0, 3, 2])              # replica 1 moved from log dir 1 to 3
    lib.shmlog_ring_publish_replica_fsynced(ring.map, 1, 1, 5000, ffi.NULL)   # the old dir's mirror, late
    assert lib.shmlog_ring_replica_fsynced(ring.map, 1) == 0
    lib.shmlog_ring_publish_replica_fsynced(ring.map, 1, 3, 10, ffi.NULL)
    assert lib.shmlog_ring_replica_fsynced(ring.map, 1) == 10


@pytest.mark.parametrize("value_bytes", [1, 100, 1024, 4093])
@pytest.mark.parametrize("count", [1, 3, 7])
def test_fixed_values_appended_are_the_bytes_the_fixed_encoder_makes_under_a_crc_the_software_crc_agrees_with(
        ring, value_bytes, count):
    values = os.urandom(count * value_bytes)
    slot = ring.acquire_producer_slot()
    ring.append_fixed(slot, 1, b"x" * 8, 8, 0, 0, ffi.NULL)   # the batch of interest starts at a later position
    base = ring.append_fixed(slot, count, values, value_bytes, 0, 0, ffi.NULL)
    cursor = ffi.new("shmlog_cursor *")
    cursor.position, cursor.next_offset = ring.start()
    dst = bytearray(CAPACITY)
    frames = ffi.new("shmlog_frame_ref[]", 8)
    n = ring.fetch(cursor, ffi.from_buffer(dst), len(dst), frames, 8, 1)
    assert n == 2 and frames[1].base_offset == base
    batch = bytes(dst[frames[1].dst_pos:frames[1].dst_pos + frames[1].batch_bytes])
    expected = bytearray(lib.shmlog_records_encode_fixed(ffi.NULL, 0, count, values, value_bytes))
    lib.shmlog_records_encode_fixed(ffi.from_buffer(expected), len(expected), count, values, value_bytes)
    assert batch[lib.SHMLOG_BATCH_HEADER_BYTES:] == bytes(expected)
    crc = lib.shmlog_crc32c_sw(0, batch[lib.SHMLOG_BATCH_OFF_ATTRIBUTES:], len(batch) - lib.SHMLOG_BATCH_OFF_ATTRIBUTES)
    assert int.from_bytes(batch[lib.SHMLOG_BATCH_OFF_CRC:lib.SHMLOG_BATCH_OFF_CRC + 4], "big") == crc


def test_records_are_read_back_across_more_laps_than_a_publish_mark_tells_apart(ring):
    # A one-byte publish mark holds lap mod 255 + 1: the mark of lap 255 is lap 0's again.
    slot = ring.acquire_producer_slot()
    cursor = ffi.new("shmlog_cursor *")
    value = bytes(4000)
    laps, offset = 300, 0
    while ring.end()[0] < laps * CAPACITY:
        batch = [b"%08d" % (offset + i) + value for i in range(3)]
        assert append(ring, slot, batch) == offset
        assert read_all(ring, cursor) == [(offset + i, v) for i, v in enumerate(batch)]
        offset += len(batch)
        lib.shmlog_ring_release_to(ring.map, cursor.position)
    assert ring.end()[0] // CAPACITY >= laps
