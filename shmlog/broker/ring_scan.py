"""The supervisor's housekeeping over every ring, at a cost that does not grow with idle ones.

Dead producers' slots and stalled claims can only be in a ring where a producer slot, a fenced
claim or a reader pin is held; one C pass over the ring headers (shmlog_rings_held,
csrc/core/scan.c) finds those, and only they get the per-slot checks in Python. A broker with
10,000 partitions nobody is attached to spends a cache line or two per ring per round.
"""
from shmlog._native import ffi, lib


class HeldRings:
    """A full scan (every ring) is asked for now and then and whenever a client was lost; the
    rounds between look again only at the rings the last scans found held."""

    def __init__(self):
        self._version = None
        self._keys = []
        self._handles = self._out = None
        self._held = []

    def held(self, rings, version, full):
        """[(key, ring)] of `rings` ({key: Ring}) with something held; `version` changes whenever
        the dict does (the C array of handles is rebuilt then, and the scan is a full one)."""
        if version != self._version:
            self._keys = list(rings.items())
            self._handles = ffi.new("shmlog_ring_handle *[]", [r.map for _, r in self._keys] or 1)
            self._out = ffi.new("uint32_t[]", max(len(self._keys), 1))
            self._version = version
            full = True
        if full:
            keys, handles = self._keys, self._handles
        else:
            keys = self._held
            handles = ffi.new("shmlog_ring_handle *[]", [r.map for _, r in keys] or 1)
        n = lib.shmlog_rings_held(handles, len(keys), self._out) if keys else 0
        self._held = [keys[self._out[i]] for i in range(n)]
        return self._held
