"""The supervisor's housekeeping over every ring, at a cost that does not grow with idle ones.

Dead producers' slots and stalled claims can only be in a ring where a producer slot, a fenced
claim or a reader pin is held; one C pass over the ring headers (shmlog_rings_held,
csrc/core/scan.c) finds those, and only they get the per-slot checks in Python. A broker with
10,000 partitions nobody is attached to spends a cache line or two per ring per round.
"""
from shmlog._native import ffi, lib


class HeldRings:
    def __init__(self):
        self._version = None
        self._keys = []
        self._handles = self._out = None

    def held(self, rings, version):
        """[(key, ring)] of `rings` ({key: Ring}) with something held; `version` changes whenever
        the dict does (the C array of handles is rebuilt then)."""
        if version != self._version:
            self._keys = list(rings.items())
            self._handles = ffi.new("shmlog_ring_handle *[]", [r.map for _, r in self._keys] or 1)
            self._out = ffi.new("uint32_t[]", max(len(self._keys), 1))
            self._version = version
        if not self._keys:
            return []
        n = lib.shmlog_rings_held(self._handles, len(self._keys), self._out)
        return [self._keys[self._out[i]] for i in range(n)]
