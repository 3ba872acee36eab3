"""Kafka's producer state (ProducerStateManager) for idempotent and transactional producers that
write through the listener: which batch of a producer may be appended to a partition next.

All TCP producers append through the listener's one producer slot per ring, whose sequence
record (csrc/core/append.c) follows one producer id at a time; this table follows each
producer id per partition, so the rules below hold however producers interleave. The ring's
own check still runs on every append and agrees with this one.

Per (topic, partition, producer id): the producer epoch and the last DUPLICATE_WINDOW batches
(first sequence, last sequence, base offset), as Kafka keeps them:

- an epoch older than the newest known for the producer id (from this partition, or from an
  InitProducerId answered through the listener, which is how a zombie transactional producer
  is fenced on partitions its successor has not written yet): INVALID_PRODUCER_EPOCH;
- a batch equal to one of the cached ones is a retry: answered with its first offset, appended
  again never;
- otherwise its first sequence must follow the last one (0 for a new epoch):
  OUT_OF_ORDER_SEQUENCE_NUMBER if not. A producer id unknown to the partition may start at
  any sequence (Kafka does the same since KIP-360: its state may have been cleaned).

State lives in memory: after the listener restarts, each producer's first batch per partition
is accepted at whatever sequence it has (a retry of a batch sent before the restart is not
recognised as one).
"""
import collections
import threading

DUPLICATE_WINDOW = 5          # Kafka's NumBatchesToRetain (and librdkafka's max.in.flight bound)
SEQUENCE_MASK = 0x7FFFFFFF
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47


class Refused(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class _Entry:
    __slots__ = ("epoch", "batches")

    def __init__(self, epoch):
        self.epoch = epoch
        self.batches = collections.deque(maxlen=DUPLICATE_WINDOW)


class ProducerTable:
    def __init__(self):
        self.entries = {}        # (topic, partition, producer id) -> _Entry
        self.epochs = {}         # producer id -> newest epoch known
        self.lock = threading.Lock()

    def note_epoch(self, producer_id, epoch):
        """An InitProducerId answered (producer_id, epoch): older epochs of the id are fenced."""
        with self.lock:
            if epoch > self.epochs.get(producer_id, -1):
                self.epochs[producer_id] = epoch

    def check(self, topic, partition, producer_id, epoch, first_seq, count):
        """None (append it), the base offset of the batch it repeats, or Refused.
        Call with the partition's append lock held, then note() once appended."""
        where = f"{topic}-{partition}"
        newest = self.epochs.get(producer_id, -1)
        if epoch < newest:
            raise Refused(INVALID_PRODUCER_EPOCH, f"{where}: producer id {producer_id} epoch {epoch} is fenced: "
                                                  f"epoch {newest} is newer")
        entry = self.entries.get((topic, partition, producer_id))
        if entry is None:
            return None
        if epoch < entry.epoch:
            raise Refused(INVALID_PRODUCER_EPOCH, f"{where}: producer id {producer_id} epoch {epoch} is fenced: "
                                                  f"epoch {entry.epoch} has written to the partition")
        last_seq = (first_seq + count - 1) & SEQUENCE_MASK
        if epoch > entry.epoch:
            if first_seq != 0:
                raise Refused(OUT_OF_ORDER_SEQUENCE_NUMBER, f"{where}: producer id {producer_id}'s new epoch "
                                                            f"{epoch} starts at sequence {first_seq}, not 0")
            return None
        for first, last, base in entry.batches:
            if first == first_seq and last == last_seq:
                return base
        expected = (entry.batches[-1][1] + 1) & SEQUENCE_MASK if entry.batches else first_seq
        if first_seq != expected:
            raise Refused(OUT_OF_ORDER_SEQUENCE_NUMBER, f"{where}: producer id {producer_id} epoch {epoch}: "
                                                        f"sequence {first_seq} does not follow the last one "
                                                        f"appended ({expected} expected)")
        return None

    def note(self, topic, partition, producer_id, epoch, first_seq, count, base_offset):
        key = (topic, partition, producer_id)
        entry = self.entries.get(key)
        if entry is None or entry.epoch != epoch:
            entry = self.entries[key] = _Entry(epoch)
        entry.batches.append((first_seq, (first_seq + count - 1) & SEQUENCE_MASK, base_offset))
        with self.lock:
            if epoch > self.epochs.get(producer_id, -1):
                self.epochs[producer_id] = epoch
