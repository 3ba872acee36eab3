"""CRC32C throughput of the C core (the checksum of every record batch), by buffer size.

    PYTHONPATH=. python bench/bench_crc.py

Prints GB/s for the hardware path (three interleaved crc32 lanes, csrc/core/hash.c) and the
software fallback (slice-by-8) on buffers that fit L2, L3 and neither.
"""
import os
import time

from shmlog._native import lib


def gb_per_s(crc, data, min_seconds=0.3):
    rounds, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        crc(0, data, len(data))
        rounds += 1
    return rounds * len(data) / (time.perf_counter() - start) / 1e9


def main():
    print(f"hardware crc32 instruction available: {bool(lib.shmlog_crc32c_hw_available())}")
    print("| buffer | shmlog_crc32c GB/s | software fallback GB/s |\n|---:|---:|---:|")
    for size in (64 << 10, 1 << 20, 16 << 20):
        data = os.urandom(size)
        print(f"| {size >> 10:,} KiB | {gb_per_s(lib.shmlog_crc32c, data):.1f} | "
              f"{gb_per_s(lib.shmlog_crc32c_sw, data):.1f} |")


if __name__ == "__main__":
    main()
