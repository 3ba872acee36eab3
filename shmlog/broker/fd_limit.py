"""Open-descriptor limit of broker processes.

A broker with many partitions holds descriptors per partition it writes (the persister and the
mirrors: a directory lock, the active segment and its two index files; at most as many
partitions as open_files.py derives from this limit). The default soft RLIMIT_NOFILE (often
1,024) is far below what the hard limit allows, so each broker process
raises its soft limit to the hard one at start (the persister and the other children inherit
the supervisor's; they raise their own too, being started on their own as well).
"""
import resource

NR_OPEN = "/proc/sys/fs/nr_open"


def raise_to_hard_limit():
    """Raise the soft RLIMIT_NOFILE to the hard limit (the kernel's nr_open when unlimited).
    (before, after), or None when it could not be raised (it stays as it was)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open(NR_OPEN) as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return None
    return soft, target
