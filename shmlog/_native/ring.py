"""A partition ring: the Python face of the C claim/publish/fetch functions.

Invariants live in the C core (csrc/core/); this module turns status codes
into KafkaErrors that name the partition, and repairs claims left by dead producers or held
by producers stalled for longer than shmlog.claim.timeout.ms.
"""
import itertools
import os
import time

from shmlog._native import ffi, layout, lib, procs
from shmlog._native.shm import Mapping
from shmlog.errors import KafkaError, KafkaException, error

_tokens = itertools.count(1)

STATUS_NAMES = {
    lib.SHMLOG_EAGAIN: "nothing published yet",
    lib.SHMLOG_EFULL: "ring full",
    lib.SHMLOG_ETOOBIG: "frame larger than the ring",
    lib.SHMLOG_ECORRUPT: "corrupt frame",
    lib.SHMLOG_EOVERWRITTEN: "position overwritten",
    lib.SHMLOG_EBADHEADER: "invalid ring header",
    lib.SHMLOG_ECRC: "CRC32C mismatch",
    lib.SHMLOG_ENOSLOT: "no free slot",
    lib.SHMLOG_EFENCED: "claim fenced (passed by readers after shmlog.claim.timeout.ms)",
    lib.SHMLOG_ESMALL: "buffer too small",
    lib.SHMLOG_ECLOSED: "ring closed by a stopping broker",
    lib.SHMLOG_EDUPLICATE: "duplicate sequence number",
    lib.SHMLOG_ESEQUENCE: "out-of-order sequence number",
    lib.SHMLOG_EUNKNOWNPRODUCER: "unknown producer id",
    lib.SHMLOG_EEPOCH: "fenced producer epoch",
    lib.SHMLOG_ENOTENOUGHREPLICAS: "fewer in-sync replicas than min.insync.replicas",
}

# The one home of the rule "ring status -> KafkaError": an append's status (shmlog_ring_append,
# _append_fixed, _append_records) as (code, message after the partition's name).
APPEND_ERRORS = {
    lib.SHMLOG_EFULL: (KafkaError._MSG_TIMED_OUT,
                       "ring full for max.block.ms={timeout_ms:g}: its {capacity} bytes are not yet persisted "
                       "(persister behind or stopped)"),
    lib.SHMLOG_ECLOSED: (KafkaError._TRANSPORT,
                         "the broker stopped (it closed the partition's ring): nothing was appended"),
    lib.SHMLOG_EFENCED: (KafkaError._MSG_TIMED_OUT,
                         "this producer was stopped (SIGSTOP, a debugger) while it held a claim for longer than "
                         "shmlog.claim.timeout.ms; readers passed the claim and the batch of {records_bytes} record "
                         "bytes was not written (its offsets hold an empty control batch); produce it again"),
    lib.SHMLOG_ESEQUENCE: (KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
                           "the idempotent batch's sequence does not follow the last one this producer appended "
                           "to the partition (a gap): nothing was appended"),
    lib.SHMLOG_EDUPLICATE: (KafkaError.DUPLICATE_SEQUENCE_NUMBER,
                            "the idempotent batch's sequence is at or below the last one this producer appended "
                            "to the partition: it is in the log already, nothing was appended"),
    lib.SHMLOG_EEPOCH: (KafkaError.INVALID_PRODUCER_EPOCH,
                        "the producer epoch is older than one already appended with the same producer id (this "
                        "producer was fenced): nothing was appended"),
    lib.SHMLOG_EUNKNOWNPRODUCER: (KafkaError.UNKNOWN_PRODUCER_ID,
                                  "the idempotent batch's first sequence is not 0 but the partition has no state of "
                                  "this producer (its batches were lost, or never written): nothing was appended"),
    lib.SHMLOG_ETOOBIG: (KafkaError.MSG_SIZE_TOO_LARGE,
                         "a batch of {records_bytes} record bytes can never fit the partition's ring of {capacity} "
                         "bytes; raise the topic's ring.bytes"),
}
# shmlog_ring_wait_flushed's status (acks=all) when not 0; SHMLOG_ENOTENOUGHREPLICAS is
# Ring.not_enough_replicas(), which names the ISR; any other status is a timeout.
FLUSH_WAIT_ERRORS = {
    lib.SHMLOG_ECORRUPT: (KafkaError.KAFKA_STORAGE_ERROR,
                          "the persister cannot write to disk (errno {storage_errno}); records are safe in the ring "
                          "but not durable", True),
    lib.SHMLOG_EAGAIN: (KafkaError._MSG_TIMED_OUT, "offset {offset} was not fsynced within message.timeout.ms", None),
}

# How long a dead producer's claim still marked CLAIMING (it may have lost its CAS) stays
# unpublished before it is repaired. A live producer's claim (OWNED) is fenced once it is older
# than shmlog.claim.timeout.ms: consumers blocked behind it use their own setting, the persister
# and the supervisor's housekeeping the default.
STUCK_CLAIM_GRACE_S = 0.05
UNCLAIMED_GRACE_S = 1.0
DEFAULT_CLAIM_TIMEOUT_MS = 2000


def owner_token():
    return (os.getpid() << 24) | (next(_tokens) & 0xFFFFFF)


class Ring:
    """One mapped partition ring. Not thread-safe; each client guards its own use."""

    def __init__(self, mapping, topic, partition):
        handle = ffi.new("shmlog_ring_handle *")
        rc = lib.shmlog_ring_open(handle, mapping.ptr, mapping.size)
        if rc != 0:
            raise error(KafkaError._BAD_MSG,
                        f"shared memory {mapping.name} for {topic}-{partition} has an invalid ring header "
                        f"(garbage or another layout version); delete and recreate the topic or restart the broker")
        self.mapping = mapping
        self.map = handle  # what every lib.shmlog_ring_* call takes
        self.topic = topic
        self.partition = partition
        self.header = handle.header
        self.capacity_bytes = handle.capacity_bytes
        self.data_offset = handle.data_offset
        self._stuck_since = {}
        self._slot_tokens = {}

    @classmethod
    def create(cls, name, capacity_bytes, topic, topic_id, partition, start_offset=0, mode=0o600,
               leader_epoch=0, group=None, slots=0):
        """slots: producer slots and reader pins (the topic's ring.slots); 0 sizes them by capacity."""
        if not 0 <= slots <= lib.SHMLOG_MAX_SLOTS:
            raise error(KafkaError._INVALID_ARG, f"ring.slots={slots} must be 0 (by ring.bytes) "
                        f"or at most {lib.SHMLOG_MAX_SLOTS}")
        mapping = Mapping.create(name, lib.shmlog_ring_map_bytes(capacity_bytes, slots), mode, group)
        rc = lib.shmlog_ring_init(mapping.ptr, mapping.size, capacity_bytes, topic_id, partition,
                                  leader_epoch, start_offset, slots)
        if rc != 0:
            mapping.close()
            raise error(KafkaError._INVALID_ARG, f"ring.bytes={capacity_bytes} must be a power of two "
                        f"between {layout.MIN_CAPACITY_BYTES} and {layout.MAX_CAPACITY_BYTES}")
        return cls(mapping, topic, partition)

    @classmethod
    def open(cls, name, topic, partition, populate=False, owner=None):
        return cls(Mapping.open(name, populate, owner), topic, partition)

    # ------------------------------------------------------------------ slot tables

    @property
    def slot_count(self):
        """Producer slots (and as many reader pins) this ring was created with."""
        return self.map.slot_count

    @staticmethod
    def slot_state(slot):
        """A producer slot's state (its state word also holds the claim's generation)."""
        return slot.state & lib.SHMLOG_SLOT_STATE_MASK

    def producer_slots(self):
        """The producer slots ever taken (a scan need go no further)."""
        used = min(self.header.slots.producers_used, self.map.slot_count)
        return self.map.producers[0:used]

    def pins(self):
        used = min(self.header.slots.pins_used, self.map.slot_count)
        return self.map.pins[0:used]

    def close(self):
        self.mapping.close()

    def where(self):
        return f"{self.topic}-{self.partition}"

    # ------------------------------------------------------------------ offsets

    def end(self):
        cur = ffi.new("shmlog_cursor *")
        lib.shmlog_ring_end(self.map, cur)
        return cur.position, cur.next_offset

    def start(self):
        cur = ffi.new("shmlog_cursor *")
        lib.shmlog_ring_start(self.map, cur)
        return cur.position, cur.next_offset

    def locate(self, offset):
        """A cursor at the batch holding `offset` (or before it: see shmlog_ring_locate), or None
        if the offset fell out of the ring."""
        cur = ffi.new("shmlog_cursor *")
        rc = lib.shmlog_ring_locate(self.map, offset, cur)
        return cur if rc == 0 else None

    def has_data(self, position):
        return lib.shmlog_ring_has_data(self.map, position)

    def readable(self, cursor):
        """A reader at cursor (a shmlog_cursor *) may fetch something now (below the high
        watermark of a replicated ring), or must move to the segments."""
        return lib.shmlog_ring_readable(self.map, cursor)

    @property
    def high_watermark(self):
        """The offset readers see up to: the log end offset, or for a replicated ring the ISR's
        fsynced minimum."""
        if self.header.replication.replica_count > 1:
            return self.header.persist.flushed_offset
        return self.end()[1]

    @property
    def log_start_offset(self):
        return self.header.persist.log_start_offset

    @property
    def memory_only(self):
        """The topic's shmlog.persist=false: nothing of this ring is ever on disk."""
        return bool(self.header.descriptor.flags & lib.SHMLOG_RING_FLAG_MEMORY_ONLY)

    @property
    def persisted_offset(self):
        return self.header.persist.persisted_offset

    @property
    def flushed_offset(self):
        return self.header.persist.flushed_offset

    # ------------------------------------------------------------------ producing

    def not_enough_replicas(self, appended=True):
        """The acks=all error for a partition whose ISR is below min.insync.replicas: Kafka's
        NOT_ENOUGH_REPLICAS when the batch was refused before its append (the producer checks
        shmlog_ring_insync_enough first), NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrank
        while it waited for the acknowledgement. Both retriable, as in Kafka."""
        r = self.header.replication
        code, what = (KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, "the records were appended but are not "
                      "acknowledged") if appended else (KafkaError.NOT_ENOUGH_REPLICAS, "nothing was appended")
        return KafkaError(code, f"{self.where()}: {r.isr_count} in-sync replica{'s' if r.isr_count != 1 else ''} of "
                                f"{r.replica_count}, fewer than min.insync.replicas={r.min_insync_replicas}: {what}",
                          retriable=True)

    def insync_enough(self):
        """Whether an acks=all append may go ahead: the ISR holds at least min.insync.replicas."""
        return bool(lib.shmlog_ring_insync_enough(self.map))

    def check_insync(self):
        """Before an acks=all append: raise NOT_ENOUGH_REPLICAS when the ISR is below min.insync.replicas."""
        if not self.insync_enough():
            raise KafkaException(self.not_enough_replicas(appended=False))

    def set_txn(self, first_unstable_offset, aborted_count):
        """The transaction service's view of the partition (shmlog_ring_txn): the lowest offset an
        open transaction may have records at (None: none open) and its aborted.txnindex entries."""
        lib.shmlog_ring_set_txn(self.map, 0 if first_unstable_offset is None else first_unstable_offset + 1,
                                aborted_count)

    def txn_state(self):
        """(first unstable offset or None, aborted.txnindex entries, whether any transaction touched
        the ring): read after end(), as a read_committed reader must."""
        out = ffi.new("uint64_t[3]")
        lib.shmlog_ring_txn_state(self.map, out)
        return (out[0] - 1 if out[0] else None), out[1], bool(out[2])

    def acquire_producer_slot(self):
        pid, started = procs.me()
        token = owner_token()
        slot = lib.shmlog_producer_slot_acquire(self.map, pid, started, token)
        if slot < 0:
            self.reclaim_dead_slots()
            slot = lib.shmlog_producer_slot_acquire(self.map, pid, started, token)
        if slot < 0:
            raise error(KafkaError._CRIT_SYS_RESOURCE,
                        f"{self.where()}: all {self.slot_count} producer slots are taken by live processes; "
                        f"create the topic with a larger ring.slots (up to {lib.SHMLOG_MAX_SLOTS})")
        self._slot_tokens[slot] = token
        return slot

    @property
    def closed(self):
        """Unmapped (the topic went away and the client dropped it): the handle must not be used."""
        return self.mapping.ptr is None

    @property
    def stopped(self):
        """Closed by a stopping broker (csrc/core/close.c): nothing is claimed in it any more;
        what it holds was published before the close and is drained to disk."""
        return self.closed or bool(lib.shmlog_ring_is_closed(self.map))

    def close_for_stop(self, doorbell):
        """The supervisor's first step of a clean stop: producers claim nothing here from now on."""
        lib.shmlog_ring_close(self.map, doorbell)

    def open_claims(self):
        """How many producer slots still hold a claim (CLAIMING or OWNED)."""
        return lib.shmlog_ring_open_claims(self.map, ffi.NULL, 0)

    def producer_sequences(self):
        """What the sequence records say of the idempotent producers appending here now:
        [{producer_id, producer_epoch, last_sequence, last_offset}] (one per slot that appended)."""
        found = []
        for i in range(min(self.header.slots.producers_used, self.slot_count)):
            r = self.map.sequences[i]
            if r.producer_id >= 0 and r.last_sequence >= 0:
                found.append({"producer_id": r.producer_id, "producer_epoch": r.producer_epoch,
                              "last_sequence": r.last_sequence, "last_offset": r.last_offset})
        return found

    def seed_sequence(self, slot, producer_id, producer_epoch, last_sequence, last_offset):
        """(The slot's owner, before its first append here.) Start the slot's sequence record
        where the log says this producer's sequences are, so a batch re-sent to this ring that
        the log already holds is refused as a duplicate (csrc/core/append.c)."""
        r = self.map.sequences[slot]
        r.last_sequence, r.last_offset, r.producer_epoch = last_sequence, last_offset, producer_epoch
        r.producer_id = producer_id

    def release_producer_slot(self, slot):
        if not self.closed:
            lib.shmlog_producer_slot_release(self.map, slot, self._slot_tokens.pop(slot, 0))

    def append(self, slot, records, records_bytes, count, base_timestamp, max_timestamp, timeout_ms,
               doorbell, attributes=0, producer_id=-1, producer_epoch=-1, base_sequence=-1):
        """Claim, copy and publish one batch whose records section is already encoded; returns its base offset."""
        out = ffi.new("uint64_t *")
        rc = lib.shmlog_ring_append(self.map, slot, records, records_bytes, count, base_timestamp,
                                    max_timestamp, attributes, producer_id, producer_epoch,
                                    base_sequence, int(timeout_ms * 1_000_000), doorbell, out)
        return out[0] if rc >= 0 else self._append_failed(rc, records_bytes, timeout_ms)

    def append_records(self, slot, encoder_args, base_timestamp, max_timestamp, timeout_ms, doorbell,
                       producer_id=-1, producer_epoch=-1):
        """Claim a frame and encode the records straight into it (see shmlog_records_encode for
        encoder_args); returns the batch's base offset."""
        out = ffi.new("uint64_t *")
        count, keys, key_lens, values, value_lens, timestamps, _, headers, header_lens = encoder_args
        rc = lib.shmlog_ring_append_records(self.map, slot, count, keys, key_lens, values, value_lens, timestamps,
                                            base_timestamp, max_timestamp, headers, header_lens, producer_id,
                                            producer_epoch, int(timeout_ms * 1_000_000), doorbell, out)
        return out[0] if rc >= 0 else self._append_failed(rc, len(values) + len(keys), timeout_ms)

    def append_fixed(self, slot, count, values, value_bytes, timestamp, timeout_ms, doorbell,
                     producer_id=-1, producer_epoch=-1):
        """Claim a frame and encode `count` fixed-size values straight into it; returns the base offset."""
        out = ffi.new("uint64_t *")
        rc = lib.shmlog_ring_append_fixed(self.map, slot, count, values, value_bytes, timestamp, producer_id,
                                          producer_epoch, int(timeout_ms * 1_000_000), doorbell, out)
        return out[0] if rc >= 0 else self._append_failed(rc, count * value_bytes, timeout_ms)

    def _append_failed(self, rc, records_bytes, timeout_ms):
        if rc == lib.SHMLOG_ENOTENOUGHREPLICAS:   # only the acks=all check before a claim returns it here
            raise KafkaException(self.not_enough_replicas(appended=False))
        code, text = APPEND_ERRORS.get(rc, (KafkaError._FAIL, "append failed: {status}"))
        raise error(code, f"{self.where()}: " + text.format(timeout_ms=timeout_ms, capacity=self.capacity_bytes,
                                                            records_bytes=records_bytes,
                                                            status=STATUS_NAMES.get(rc, rc)))

    def flush_wait_error(self, rc, last_offset):
        """The KafkaError for shmlog_ring_wait_flushed's status rc (not 0) while waiting for last_offset."""
        if rc == lib.SHMLOG_ENOTENOUGHREPLICAS:
            return self.not_enough_replicas()
        code, text, retriable = FLUSH_WAIT_ERRORS.get(rc, FLUSH_WAIT_ERRORS[lib.SHMLOG_EAGAIN])
        return KafkaError(code, f"{self.where()}: " + text.format(
            offset=last_offset, storage_errno=self.header.persist.storage_error), retriable=retriable)

    # ------------------------------------------------------------------ reading

    def fetch(self, cursor, dst, dst_bytes, frames, max_frames, check_crc):
        """Copy (or, with dst NULL, locate) published batches from cursor; returns frame count.

        Raises KafkaException for corruption; returns lib.SHMLOG_EOVERWRITTEN or
        lib.SHMLOG_ESMALL unchanged so the caller can fall back or grow its buffer.
        """
        n = lib.shmlog_ring_fetch(self.map, cursor, dst, dst_bytes, frames, max_frames, check_crc)
        if n >= 0 or n in (lib.SHMLOG_EOVERWRITTEN, lib.SHMLOG_ESMALL):
            return n
        self.fetch_failed(n, cursor)

    def fetch_failed(self, n, cursor):
        """Raise the KafkaException for a fetch that returned status n (corruption)."""
        what = "CRC32C mismatch in batch" if n == lib.SHMLOG_ECRC else "corrupt frame"
        raise error(KafkaError._BAD_MSG,
                    f"{self.where()}: {what} at ring position {cursor.position} (expected offset "
                    f"{cursor.next_offset}); shared memory holds bytes that are not a valid record batch")

    def repair_if_stuck(self, position, doorbell, claim_timeout_ms=DEFAULT_CLAIM_TIMEOUT_MS):
        """Turn the unpublished claim at `position` into a skippable frame if its producer died, or
        fence it if its live producer has held it for claim_timeout_ms. True if repaired."""
        slots = ffi.new("int[8]")
        n = lib.shmlog_ring_stuck_claims(self.map, position, slots, 8)
        if n <= 0:
            if n == 0 and self.end()[0] > position and not self.has_data(position):
                self._raise_if_unclaimed_too_long(position)
            else:
                self._stuck_since.pop(position, None)
            return False
        candidates = [self.map.producers[slots[i]] for i in range(n)]
        dead = [(slots[i], s) for i, s in enumerate(candidates) if not procs.alive(s.pid, s.pid_start_time)]
        if not dead:
            return self._fence_if_stalled(position, slots, candidates, doorbell, claim_timeout_ms)
        owned = [i for i, s in dead if self.slot_state(s) in (lib.SHMLOG_SLOT_OWNED, lib.SHMLOG_SLOT_COMMITTING)]
        # Any live slot at this position may be the real owner (it may not have marked OWNED yet).
        live_owner = len(dead) < len(candidates)
        if owned:
            chosen = owned[0]
        else:
            # A dead CLAIMING slot may have lost its CAS: repair only when nobody alive owns the
            # position and it stayed unpublished for a grace period.
            if live_owner or self._stuck_for_s(position) < STUCK_CLAIM_GRACE_S or len(dead) != 1:
                return False
            chosen = dead[0][0]
        self._stuck_since.pop(position, None)
        return lib.shmlog_ring_repair(self.map, chosen, doorbell) == 0

    def _fence_if_stalled(self, position, slots, candidates, doorbell, claim_timeout_ms):
        """A live producer holding its claim (OWNED) longer than the timeout is passed; the C core
        checks the claim's age again after winning the fence."""
        for i, s in enumerate(candidates):
            if self.slot_state(s) == lib.SHMLOG_SLOT_OWNED:
                rc = lib.shmlog_ring_fence_stalled(self.map, slots[i], position, int(claim_timeout_ms) * 1_000_000,
                                                   doorbell)
                return rc == 0
        return False

    def fence_stalled_claims(self, doorbell, claim_timeout_ms=DEFAULT_CLAIM_TIMEOUT_MS):
        """Housekeeping: pass every claim held past the timeout by a live producer that blocks readers."""
        oldest_ns = time.time_ns() - int(claim_timeout_ms) * 1_000_000
        for s in self.producer_slots():
            if self.slot_state(s) == lib.SHMLOG_SLOT_OWNED and s.claim_unix_ns < oldest_ns:
                self.repair_if_stuck(s.claim_position, doorbell, claim_timeout_ms)

    def cursor_at_persister(self, offset):
        """A cursor at `offset` when it is where the persister stands (persisted_offset) below
        the ring's end, else None. Ring space is released only once persisted, so that batch is
        in the ring, at persisted_position, even when locate() cannot reach it (its index entry
        and the frames before it overwritten or garbage). A frame there that is not that batch
        raises _BAD_MSG once readers have seen it there, the persister not moving, for
        UNCLAIMED_GRACE_S (before that the pair, two words, may have been read mid-update); a
        reader would otherwise wait forever for an offset the persister cannot write."""
        persist = self.header.persist
        position, persisted = persist.persisted_position, persist.persisted_offset
        if persisted != offset or offset >= self.end()[1] or self.memory_only:
            return None
        probe = ffi.new("shmlog_cursor *")
        probe.position, probe.next_offset = position, offset
        frames = ffi.new("shmlog_frame_ref[1]")
        n = lib.shmlog_ring_fetch(self.map, probe, ffi.NULL, 0, frames, 1, 0)
        key = ("persisted", position, offset)
        if n >= 0 or n in (lib.SHMLOG_EOVERWRITTEN, lib.SHMLOG_ESMALL):
            self._stuck_since.pop(key, None)
            if n <= 0:
                return None
            probe.position, probe.next_offset = position, offset
            return probe
        if self._stuck_for_s(key) >= UNCLAIMED_GRACE_S:
            self.fetch_failed(n, probe)
        return None

    def _stuck_for_s(self, key):
        """Seconds since `key` (a ring position, or another stuck condition) was first seen stuck."""
        return time.monotonic() - self._stuck_since.setdefault(key, time.monotonic())

    def _raise_if_unclaimed_too_long(self, position):
        """Below the tail, unpublished, and no producer slot claims it: only garbage in shared
        memory (or a claim whose slot was overwritten) leaves that; say so instead of waiting forever."""
        if self._stuck_for_s(position) >= UNCLAIMED_GRACE_S:
            raise error(KafkaError._BAD_MSG,
                        f"{self.where()}: ring position {position} is below the tail but was never published "
                        f"and no producer claims it: the ring's shared memory is corrupt; recreate the topic or "
                        f"restart the broker to rebuild the ring from the segment files")

    def reclaim_dead_slots(self, doorbell=ffi.NULL):
        """Free producer slots and pins whose processes are gone; repair their claims first."""
        probe = ffi.new("int[8]")
        for i, s in enumerate(self.producer_slots()):
            if not s.pid or procs.alive(s.pid, s.pid_start_time):
                continue
            if self.slot_state(s) in (lib.SHMLOG_SLOT_CLAIMING, lib.SHMLOG_SLOT_OWNED, lib.SHMLOG_SLOT_COMMITTING):
                n = lib.shmlog_ring_stuck_claims(self.map, s.claim_position, probe, 8)
                if i in [probe[k] for k in range(n)] and not self.repair_if_stuck(s.claim_position, doorbell):
                    continue  # its claim still blocks readers: repaired once the grace period passes
            lib.shmlog_producer_slot_release(self.map, i, s.owner_token)  # a FENCED slot's hold ends too
        for i, p in enumerate(self.pins()):
            if p.in_use and not procs.alive(p.pid, p.pid_start_time):
                lib.shmlog_pin_release(self.map, i)

    # ------------------------------------------------------------------ pins (zero-copy readers)

    def acquire_pin(self):
        pid, started = procs.me()
        pin = lib.shmlog_pin_acquire(self.map, pid, started, owner_token())
        if pin < 0:
            self.reclaim_dead_slots()
            pin = lib.shmlog_pin_acquire(self.map, pid, started, owner_token())
        if pin < 0:
            raise error(KafkaError._CRIT_SYS_RESOURCE,
                        f"{self.where()}: all {self.slot_count} reader pins are taken by live processes; create "
                        f"the topic with a larger ring.slots (up to {lib.SHMLOG_MAX_SLOTS})")
        return pin

    def set_pin(self, pin, position):
        return not self.closed and lib.shmlog_pin_set(self.map, pin, position) == 0

    def release_pin(self, pin):
        if not self.closed:
            lib.shmlog_pin_release(self.map, pin)


class Doorbell:
    """The broker-wide futex table blocked readers sleep on."""

    def __init__(self, mapping):
        if lib.shmlog_doorbell_validate(mapping.ptr, mapping.size) != 0:
            raise error(KafkaError._BAD_MSG, f"shared memory {mapping.name} is not a valid shmlog doorbell")
        self.mapping = mapping
        self.header = ffi.cast("shmlog_doorbell *", mapping.ptr)
        self.ptr = self.header  # what every lib.shmlog_doorbell_* and append/wait call takes

    @classmethod
    def create(cls, name, mode=0o600, group=None):
        mapping = Mapping.create(name, layout.DOORBELL_BYTES, mode, group)
        lib.shmlog_doorbell_init(mapping.ptr)
        return cls(mapping)

    @classmethod
    def open(cls, name, owner=None):
        return cls(Mapping.open(name, owner=owner))

    @property
    def metadata_epoch(self):
        return self.header.metadata_epoch

    def bump_metadata_epoch(self):
        self.header.metadata_epoch += 1
        lib.shmlog_doorbell_wake_all(self.ptr)   # an idle persister sleeps up to a second

    @property
    def broker_state(self):
        """lib.SHMLOG_BROKER_RUNNING, _STOPPING (rings closed, draining) or _STOPPED (drained)."""
        return self.header.broker_state

    @property
    def running(self):
        return self.mapping.ptr is not None and self.header.broker_state == lib.SHMLOG_BROKER_RUNNING

    def acquire(self):
        pid, started = procs.me()
        slot = lib.shmlog_doorbell_acquire(self.ptr, pid, started, owner_token())
        if slot < 0:
            self.reclaim_dead()
            slot = lib.shmlog_doorbell_acquire(self.ptr, pid, started, owner_token())
        return slot  # negative: no slot; the caller falls back to timed polling

    def release(self, slot):
        if slot >= 0:
            lib.shmlog_doorbell_release(self.ptr, slot)

    def reclaim_dead(self):
        for i in range(lib.SHMLOG_DOORBELL_SLOTS):
            s = self.header.slots[i]
            if s.pid and not procs.alive(s.pid, s.pid_start_time):
                lib.shmlog_doorbell_release(self.ptr, i)

    def close(self):
        self.mapping.close()
