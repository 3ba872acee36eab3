"""CRC32C, murmur2 and FNV-1a against published vectors (and librdkafka's partitions)."""
import random

import pytest

import shmlog
from shmlog._native import lib
from shmlog.client.partitioner import fnv1a, fnv1a_partition, murmur2, murmur2_partition

# RFC 3720 (iSCSI) appendix B.4 and the common "123456789" check value.
CRC32C_VECTORS = [
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"", 0),
]

# Kafka's UtilsTest.testMurmur2.
MURMUR2_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize("data,expected", CRC32C_VECTORS)
def test_crc32c_matches_published_vectors(data, expected):
    assert lib.shmlog_crc32c(0, data, len(data)) == expected


@pytest.mark.parametrize("data,expected", CRC32C_VECTORS)
def test_software_crc32c_fallback_matches_published_vectors(data, expected):
    assert lib.shmlog_crc32c_sw(0, data, len(data)) == expected


def test_hardware_and_software_crc32c_agree_on_every_length_and_alignment():
    blob = bytes((i * 37 + 11) & 0xFF for i in range(4096))
    for start in range(8):
        for length in (0, 1, 7, 8, 9, 63, 64, 65, 1000, 4000):
            piece = blob[start:start + length]
            assert lib.shmlog_crc32c(0, piece, len(piece)) == lib.shmlog_crc32c_sw(0, piece, len(piece))


def test_crc32c_can_be_computed_incrementally():
    data = b"hello, shared memory"
    whole = lib.shmlog_crc32c(0, data, len(data))
    first = lib.shmlog_crc32c(0, data[:5], 5)
    assert lib.shmlog_crc32c(first, data[5:], len(data) - 5) == whole


@pytest.mark.parametrize("key,expected", MURMUR2_VECTORS)
def test_murmur2_matches_kafkas_vectors(key, expected):
    assert murmur2(key) == expected


def test_murmur2_partition_is_the_positive_hash_modulo_partitions():
    for key, h in MURMUR2_VECTORS:
        assert murmur2_partition(key, 7) == (h & 0x7FFFFFFF) % 7


def test_crc32c_of_buffers_long_enough_for_the_three_lane_loop_matches_the_software_crc():
    data = bytes(random.Random(7).getrandbits(8) for _ in range(3 * 4096 * 3 + 77))
    for length in (3 * 4096 - 1, 3 * 4096, 3 * 4096 + 1, 2 * 3 * 4096 + 13, len(data)):
        for start in (0, 5):
            piece = data[start:start + length]
            for seed in (0, 0xDEADBEEF):
                assert lib.shmlog_crc32c(seed, piece, len(piece)) == lib.shmlog_crc32c_sw(seed, piece, len(piece))


# librdkafka's unittest_fnv1a (src/rdfnv1a.c): rd_fnv1a(), the 32-bit FNV-1a hash made positive as
# Sarama's NewHashPartitioner does, for "kafka", "giberish123456789", "1234" and its tails, "".
FNV1A_VECTORS = [
    (b"kafka", 0xd33c4e1), (b"giberish123456789", 0x77a58295),
    (b"1234", 0x23bdd03), (b"234", 0x2dea3cd2), (b"34", 0x740fa83e), (b"4", 0x310ca263),
    (b"PreAmbleWillBeRemoved,ThePrePartThatIs", 0x65cbd69c), (b"reAmbleWillBeRemoved,ThePrePartThatIs", 0x6e49c79a),
    (b"eAmbleWillBeRemoved,ThePrePartThatIs", 0x69eed356), (b"AmbleWillBeRemoved,ThePrePartThatIs", 0x6abcc023),
    (b"", 0x7ee3623b),
]

# confluent_kafka.fnv1a(key, n) (confluent-kafka 2.16.1, librdkafka 2.16.0) for n = 3, 7, 10, 100, 1000.
FNV1A_PARTITIONS = [
    (b"", [0, 2, 5, 35, 35]),
    (b"a", [0, 6, 6, 76, 76]),
    (b"b", [0, 5, 9, 19, 219]),
    (b"foobar", [0, 4, 6, 76, 576]),
    (b"hello", [0, 2, 3, 23, 723]),
    (b"user-42", [0, 6, 9, 99, 499]),
    (b"\xff\x00\x80", [1, 2, 2, 2, 802]),
    (b"a-little-bit-long-string", [1, 1, 4, 4, 104]),
    (b"21", [0, 3, 2, 52, 452]),
    (b"abc", [2, 5, 1, 31, 331]),
]


@pytest.mark.parametrize("key,expected", FNV1A_VECTORS)
def test_fnv1a_matches_librdkafkas_vectors(key, expected):
    assert fnv1a(key) == expected


@pytest.mark.parametrize("key,expected", FNV1A_PARTITIONS)
def test_the_producers_fnv1a_partitioner_picks_the_partition_librdkafka_picks(key, expected):
    assert [fnv1a_partition(key, n) for n in (3, 7, 10, 100, 1000)] == expected


@pytest.mark.parametrize("key,expected", FNV1A_PARTITIONS)
def test_the_producers_fnv1a_partitioner_agrees_with_shmlog_fnv1a(key, expected):
    assert [fnv1a_partition(key, n) for n in (3, 7, 10, 100, 1000)] == [shmlog.fnv1a(key, n)
                                                                        for n in (3, 7, 10, 100, 1000)]

