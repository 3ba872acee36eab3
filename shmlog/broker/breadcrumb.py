"""Which partition a persister or mirror process was working on when it died.

Each of those processes keeps a small file in the data dir (`persister.working`,
`mirror-<log dir index>.working`), mapped into its memory, and writes into it the partition it
starts working on (opening it, or a round of copying it) whenever that changes: a store into
the page cache, no system call, and what it wrote survives a SIGKILL. The supervisor reads it
when the process has died; three deaths on the same partition within a minute are a crash
loop (replication.py: the replica is taken offline, as a failed log dir is).

Format: a 4-byte big-endian length, then "<topic>\\n<partition>" in UTF-8 (zero length: none).
"""
import mmap
import os
import struct

SIZE = 512
_LEN = struct.Struct(">I")


def path(data_dir, kind):
    """kind: "persister" or "mirror-<log dir index>"."""
    return os.path.join(data_dir, f"{kind}.working")


class Breadcrumb:
    def __init__(self, data_dir, kind):
        # 0o640: the data dir's file mode, as the supervisor reads it (docs/security.md)
        fd = os.open(path(data_dir, kind), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.ftruncate(fd, SIZE)
            self.map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)
        self.map[:_LEN.size] = _LEN.pack(0)   # a death before we work on anything is no partition's
        self.key = None

    def set(self, key):
        """Working on key (topic, partition) from now on (None: nothing in particular)."""
        if key == self.key:
            return
        data = b"" if key is None else f"{key[0]}\n{key[1]}".encode()[:SIZE - _LEN.size]
        self.map[_LEN.size:_LEN.size + len(data)] = data
        self.map[:_LEN.size] = _LEN.pack(len(data))
        self.key = key

    def close(self):
        self.map.close()


def read(data_dir, kind):
    """The (topic, partition) a dead process last worked on, or None."""
    try:
        with open(path(data_dir, kind), "rb") as f:
            data = f.read(SIZE)
        (n,) = _LEN.unpack_from(data)
        topic, partition = data[_LEN.size:_LEN.size + n].decode().rsplit("\n", 1)
        return topic, int(partition)
    except (OSError, ValueError, struct.error, UnicodeDecodeError):
        return None
