"""POSIX shared-memory objects: names, creation, mapping, reclaim.

Names are namespaced by the data directory (`/shmlog.<ns>.*`, ns = a hash of its real
path) so brokers of different data dirs never collide and a restarted broker can find
and reclaim what a crashed one left. posix_ipc does not register objects with Python's
resource_tracker, so nothing unlinks or warns about segments other processes use.
"""
import ctypes
import errno
import hashlib
import mmap
import os
import weakref

import posix_ipc

from shmlog._native import ffi
from shmlog.errors import KafkaError, error

SHM_DIR = "/dev/shm"
# Page tables filled at map time (populate=True): the first lap of a fresh ring then costs no page
# fault per 4 KiB (faults were most of an append's time), at the price of mapping a ring up front,
# 10-20 ms for 64 MiB; group members map lazily (see Cluster.populate_rings).
MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
PREFIX = "shmlog."


def namespace(data_dir):
    return hashlib.sha1(os.path.realpath(data_dir).encode()).hexdigest()[:12]


def ring_name(ns, topic_id, partition):
    return f"/{PREFIX}{ns}.t{topic_id}.p{partition}"


def doorbell_name(ns):
    return f"/{PREFIX}{ns}.doorbell"


def names_in_namespace(ns):
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    head = f"{PREFIX}{ns}."
    return sorted("/" + e for e in entries if e.startswith(head))


def all_names():
    try:
        return sorted("/" + e for e in os.listdir(SHM_DIR) if e.startswith(PREFIX))
    except FileNotFoundError:
        return []


def owner(name):
    """The uid that owns the object, or None if there is none by that name."""
    try:
        return os.stat(os.path.join(SHM_DIR, name.lstrip("/"))).st_uid
    except FileNotFoundError:
        return None


def set_access(name, mode, group=None):
    """Give an existing object (one of ours) this mode and group (a restarted broker adopts
    objects a previous one created, maybe with other settings)."""
    path = os.path.join(SHM_DIR, name.lstrip("/"))
    if group is not None:
        os.chown(path, -1, group)
    os.chmod(path, mode)


def unlink(name):
    try:
        posix_ipc.unlink_shared_memory(name)
        return True
    except posix_ipc.ExistentialError:
        return False


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mmap.restype = ctypes.c_void_p
_LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


def _map_shared(fd, size, flags=0):
    """Map fd's first `size` bytes read-write; a buffer object unmapped when the last reference
    to it goes. Not mmap.mmap: it keeps a duplicate of the descriptor open for the life of the
    mapping, one per ring per process (20,000 descriptors for 10,000 partitions in a broker)."""
    return _mmap(fd, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | flags)


def _map_count_hint():
    """Why an mmap may fail with ENOMEM with memory to spare: a process holds at most
    vm.max_map_count mappings, and each partition's ring is one in every broker process."""
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
        with open("/proc/self/maps", "rb") as f:
            held = sum(1 for _ in f)
    except (OSError, ValueError, MemoryError):   # at the limit Python's own allocations may fail too
        return ""
    if held < limit * 0.95:
        return ""
    return (f" (this process holds {held} memory mappings, vm.max_map_count is {limit}: every partition's ring "
            f"is one mapping in each broker process; raise it with sysctl -w vm.max_map_count=N, or use fewer "
            f"partitions)")


def _mmap(fd, size, prot, flags):
    """libc mmap as a ctypes char array, unmapped when the last reference to it goes."""
    addr = _LIBC.mmap(None, size, prot, flags, fd, 0)
    if addr is None or addr == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err) + (_map_count_hint() if err == errno.ENOMEM else ""))
    buf = (ctypes.c_char * size).from_address(addr)
    # Not at exit: objects still holding the memory (a Producer's __del__ releasing its slots)
    # run after atexit, and would touch an unmapped page. The process's end unmaps it anyway.
    weakref.finalize(buf, _LIBC.munmap, addr, size).atexit = False
    return buf


_LIBC.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def map_readonly(fd, size):
    """Map fd's first `size` bytes read-only, keeping no descriptor (see _map_shared): a
    read-only memoryview, unmapped when the last view sliced from it goes. ValueError when the
    file is shorter than `size` (cut meanwhile: bytes past its end would fault on access)."""
    buf = _mmap(fd, size, mmap.PROT_READ, mmap.MAP_SHARED)
    if os.fstat(fd).st_size < size:
        raise ValueError(f"the file is shorter than the {size} bytes to map")
    return memoryview(buf).cast("B").toreadonly()


def advise_sequential(view):
    """Tell the kernel a map_readonly view is read once from start to end (it reads ahead
    further); advice only, so a refusal is ignored."""
    _LIBC.madvise(ctypes.addressof(view.obj), view.nbytes, mmap.MADV_SEQUENTIAL)


class Mapping:
    """One mapped shared-memory object; `ptr` is a cffi `void *` at its first byte."""

    __slots__ = ("name", "size", "mm", "ptr", "pid")

    def __init__(self, name, mm):
        self.name = name
        self.mm = mm
        self.size = len(mm)
        self.ptr = ffi.cast("void *", ffi.from_buffer(mm))
        self.pid = os.getpid()

    @classmethod
    def create(cls, name, size, mode=0o600, group=None):
        """Create and map an object whose memory is allocated now: a full /dev/shm is an
        error here (naming the object) rather than a SIGBUS at some later write. It is created
        0600 and given its group before its mode, so no other group ever has access."""
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
        try:
            try:
                if group is not None:
                    os.fchown(shm.fd, -1, group)
                os.fchmod(shm.fd, mode)
            except OSError:
                unlink(name)
                raise
            try:
                os.posix_fallocate(shm.fd, 0, size)
            except OSError as exc:
                unlink(name)
                raise error(KafkaError._CRIT_SYS_RESOURCE, f"cannot allocate {size} bytes of shared memory for "
                            f"{name} in {SHM_DIR}: {os.strerror(exc.errno)} (free space there, or use a smaller "
                            f"ring.bytes)") from None
            mm = _map_shared(shm.fd, size)
        finally:
            shm.close_fd()
        return cls(name, mm)

    @classmethod
    def open(cls, name, populate=False, owner=None):
        """Map an existing object; with `owner` (a uid), only if that user owns it: anyone may
        create a name in /dev/shm, so a name alone does not say whose memory it is."""
        shm = posix_ipc.SharedMemory(name)
        try:
            st = os.fstat(shm.fd)
            if owner is not None and st.st_uid != owner:
                raise error(KafkaError._AUTHENTICATION, f"shared memory {name} belongs to uid {st.st_uid}, not to "
                            f"the broker's owner (uid {owner}): refusing to map it (see docs/security.md)")
            size = st.st_size
            mm = _map_shared(shm.fd, size, MAP_POPULATE if populate else 0)
        finally:
            shm.close_fd()
        return cls(name, mm)

    def view(self):
        return memoryview(self.mm).cast("B")

    def close(self):
        """Mark closed; the memory is unmapped when the last object holding this Mapping goes
        (C handles into it, such as a ring's, may outlive the close by a little: a producer's
        open batches, a consumer's reader). Unmapping here would turn their next use into a
        SIGSEGV instead of a clean error."""
        self.ptr = None
