"""CRC32C and murmur2 against published vectors."""
import random

import pytest

from shmlog._native import lib
from shmlog.client.partitioner import murmur2, murmur2_partition

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
