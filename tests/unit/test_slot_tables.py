"""Producer slots and reader pins per ring: sized per topic (ring.slots, by default by ring.bytes),
1,024 and more without growing small rings, and every scan bounded by the slots ever taken.

Many slots are taken from this one process with distinct owner tokens (what one producer or
pin per process would be); tests/integration/test_many_clients.py does it with real processes.
"""
import os

import pytest

from shmlog._native import ffi, lib, procs
from shmlog._native.ring import Ring
from shmlog._native.shm import unlink
from shmlog.errors import KafkaError, KafkaException

SMALL = 65536
DEAD_PID = 2 ** 22 + 1  # above Linux's largest pid_max: never a live process
PID, STARTED = procs.me()


@pytest.fixture
def make_ring(request):
    made = []

    def make(capacity=SMALL, slots=0):
        name = f"/shmlog.slots{os.getpid()}.{abs(hash(request.node.name)) % 10**8}.{len(made)}"
        unlink(name)
        ring = Ring.create(name, capacity, "t", 1, 0, slots=slots)
        made.append((ring, name))
        return ring

    yield make
    for ring, name in made:
        ring.close()
        unlink(name)


def encode(value):
    lens = ffi.new("int32_t[]", [len(value)])
    size = lib.shmlog_records_encode(ffi.NULL, 0, 1, ffi.NULL, ffi.NULL, value, lens, ffi.NULL, 0, ffi.NULL, ffi.NULL)
    out = bytearray(size)
    lib.shmlog_records_encode(ffi.from_buffer(out), size, 1, ffi.NULL, ffi.NULL, value, lens, ffi.NULL, 0,
                              ffi.NULL, ffi.NULL)
    return out


def test_the_default_slot_count_grows_with_the_ring_from_64_to_1024():
    assert [lib.shmlog_ring_default_slots(1 << k) for k in (16, 20, 22, 23, 24, 26, 30)] == \
        [64, 64, 64, 128, 256, 1024, 1024]


def test_a_small_ring_is_no_larger_than_with_the_old_fixed_32_kib_header():
    old_header = 32768
    assert lib.shmlog_ring_map_bytes(SMALL, 0) <= old_header + SMALL // 16 + SMALL
    # The default 64 MiB ring's 1024 slots, 1024 pins and 1024 sequence records take 3/1024 of it.
    big = 64 << 20
    assert lib.shmlog_ring_map_bytes(big, 0) - (big + big // 16) <= 20480 + 3 * big // 1024


def test_a_ring_maps_its_header_its_slot_tables_a_one_byte_publish_mark_per_64_bytes_and_its_data():
    for capacity, slots in ((SMALL, 64), (1 << 20, 64), (64 << 20, 1024), (1 << 30, 7)):
        tables = -(-slots * 3 * 64 // 4096) * 4096   # producer slots, pins, sequence records: a page multiple
        marks = -(-capacity // 64 // 4096) * 4096                # padded to a page: the data starts on one
        assert lib.shmlog_ring_map_bytes(capacity, slots) == 20480 + tables + marks + capacity


def test_1024_producers_with_distinct_owners_each_hold_a_slot_and_append(make_ring):
    ring = make_ring(slots=1024)
    assert ring.slot_count == 1024
    slots = [lib.shmlog_producer_slot_acquire(ring.map, PID, STARTED, 1000 + i) for i in range(1024)]
    assert slots == list(range(1024))
    assert lib.shmlog_producer_slot_acquire(ring.map, PID, STARTED, 5000) == lib.SHMLOG_ENOSLOT
    records = encode(b"x" * 8)
    out = ffi.new("uint64_t *")
    for slot in (0, 63, 64, 511, 1023):
        assert lib.shmlog_ring_append(ring.map, slot, ffi.from_buffer(records), len(records), 1, 0, 0, 0, -1, -1,
                                      -1, 0, ffi.NULL, out) >= 0
    assert ring.end()[1] == 5
    assert lib.shmlog_producer_slot_release(ring.map, 700, 1700) == 0
    assert lib.shmlog_producer_slot_acquire(ring.map, PID, STARTED, 5000) == 700


def test_the_slot_table_full_error_names_the_count_and_the_topic_config_that_raises_it(make_ring):
    ring = make_ring(slots=3)
    for i in range(3):
        assert lib.shmlog_producer_slot_acquire(ring.map, PID, STARTED, 1000 + i) == i
    with pytest.raises(KafkaException) as exc:
        ring.acquire_producer_slot()
    assert exc.value.args[0].code() == KafkaError._CRIT_SYS_RESOURCE
    assert "all 3 producer slots" in str(exc.value) and "ring.slots" in str(exc.value)


def test_a_dead_producers_claim_in_slot_1000_is_found_and_repaired(make_ring):
    ring = make_ring(slots=1024)
    for i in range(1000):
        assert lib.shmlog_producer_slot_acquire(ring.map, PID, STARTED, 1000 + i) == i
    assert lib.shmlog_producer_slot_acquire(ring.map, DEAD_PID, 1, 99) == 1000
    dead = ring.map.producers[1000]
    pos, off = ring.end()
    dead.claim_position, dead.claim_offset, dead.claim_frame_bytes, dead.claim_record_count = pos, off, 128, 2
    dead.state = lib.SHMLOG_SLOT_OWNED
    ring.header.claim.tail_position, ring.header.claim.next_offset = pos + 128, off + 2
    assert ring.header.slots.producers_used == 1001
    assert ring.repair_if_stuck(pos, ffi.NULL)
    assert ring.has_data(pos) and dead.pid == 0


def test_the_release_honours_a_pin_in_the_last_of_1024_pins_and_scans_no_further_than_pins_taken(make_ring):
    ring = make_ring(slots=1024)
    pins = [lib.shmlog_pin_acquire(ring.map, PID, STARTED, 1000 + i) for i in range(1024)]
    assert pins == list(range(1024))
    assert lib.shmlog_pin_acquire(ring.map, PID, STARTED, 5000) == lib.SHMLOG_ENOSLOT
    assert ring.header.slots.pins_used == 1024
    assert lib.shmlog_pin_set(ring.map, 1023, 4096) == 0
    assert lib.shmlog_ring_release_to(ring.map, SMALL) == 4096  # SMALL persisted; a quarter held back
    lib.shmlog_pin_release(ring.map, 1023)
    assert lib.shmlog_ring_release_to(ring.map, SMALL) == SMALL - SMALL // 4


def test_a_pin_beyond_the_pins_ever_taken_is_not_scanned(make_ring):
    """pins_used bounds the releaser's scan: a pin position written into a slot nobody took (as
    garbage would be) does not hold the release; the scan is as long as the pins in use."""
    ring = make_ring(slots=1024)
    assert lib.shmlog_pin_acquire(ring.map, PID, STARTED, 1) == 0
    ring.map.pins[500].pin_position = 0
    assert lib.shmlog_ring_release_to(ring.map, SMALL) == SMALL - SMALL // 4


def test_ring_slots_up_to_65536_are_accepted_and_more_refused(make_ring):
    ring = make_ring(slots=65536)
    assert ring.slot_count == 65536
    assert lib.shmlog_producer_slot_acquire(ring.map, PID, STARTED, 1) == 0
    with pytest.raises(KafkaException, match="ring.slots"):
        make_ring(slots=65537)
