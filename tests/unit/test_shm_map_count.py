"""A mapping refused for want of map slots (vm.max_map_count) says so, naming the limit: every
partition's ring is one mapping in each broker process, so tens of thousands of partitions
reach it with memory to spare."""
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import mmap, os, tempfile
    from shmlog._native import shm
    limit = int(open("/proc/sys/vm/max_map_count").read())
    held = []
    try:
        while True:
            held.append(mmap.mmap(-1, 4096))   # shared anonymous: never merged with a neighbour
    except OSError:
        pass
    held.pop()   # one slot back: it is the mapping below that fails, not Python's allocations
    held.pop()
    with tempfile.TemporaryFile() as f:
        f.truncate(4096)
        try:
            while True:
                held.append(shm.map_readonly(f.fileno(), 4096))
        except OSError as exc:
            print(exc)
""")


def test_an_mmap_refused_at_vm_max_map_count_names_the_limit_and_the_mappings_held():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Cannot allocate memory" in done.stdout
    assert "memory mappings, vm.max_map_count is" in done.stdout and "sysctl -w vm.max_map_count" in done.stdout
