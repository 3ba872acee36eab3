"""Partitioners: Kafka's Java default (murmur2) and librdkafka's named choices."""
import random
import zlib

from shmlog._native import lib


def murmur2(key):
    return lib.shmlog_murmur2(key, len(key))


def murmur2_partition(key, partitions):
    """Kafka's Java default partitioner: toPositive(murmur2(key)) % partitions (the C rule the
    producer's fast path uses too)."""
    return lib.shmlog_murmur2_partition(key, len(key), partitions)


def consistent_partition(key, partitions):
    return (zlib.crc32(key) & 0xFFFFFFFF) % partitions


def fnv1a(key):
    """librdkafka's rd_fnv1a(): the 32-bit FNV-1a hash read as a signed int and made positive
    (abs(), as Sarama's NewHashPartitioner does; -2**31 stays 0x80000000), as an unsigned int."""
    h = lib.shmlog_fnv1a(key, len(key)) & 0xFFFFFFFF
    return (-(h - (1 << 32))) & 0xFFFFFFFF if h >> 31 else h


def fnv1a_partition(key, partitions):
    """librdkafka's fnv1a partitioner: rd_fnv1a(key) % partitions."""
    return fnv1a(key) % partitions


def random_partition(_key, partitions):
    return random.randrange(partitions)


_KEYED = {
    "murmur2": murmur2_partition, "murmur2_random": murmur2_partition,
    "consistent": consistent_partition, "consistent_random": consistent_partition,
    "fnv1a": fnv1a_partition, "fnv1a_random": fnv1a_partition,
    "random": random_partition,
}

# Partitioners whose name ends in _random send null keys to a random (sticky) partition;
# the others hash the empty key, as librdkafka does (rd_kafka_topic_new0 and rd_kafka_msg_partitioner).
NULL_KEY_IS_RANDOM = {"murmur2_random", "consistent_random", "fnv1a_random", "random"}
# consistent_random also sends a non-null empty key (b"") there: librdkafka tests its keylen, not the key.
EMPTY_KEY_IS_RANDOM = {"consistent_random"}


def keyed(name):
    return _KEYED[name]
