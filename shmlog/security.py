"""Who may use a broker on this host (docs/security.md).

A broker belongs to the user who started it (the *owner*). What others may do follows from
three broker settings, computed once into a `Policy`:

- `shmlog.shared.group`: a group that shares the data (dirs 2750, files 0640, shm 0660, all
  with that group) and may use the control channel;
- `shmlog.allowed.users` / `shmlog.allowed.groups`: who else may use the control channel. The
  supervisor checks every accepted connection's SO_PEERCRED (and SO_PEERGROUPS) against them; to
  let such a user reach the socket at all, the data dir and its run dir get o+x (search, not
  read) and the socket 0666, so the peer check is what decides.

Root is not allowed implicitly (unless it is the owner): it is named like any other user.
Clients check the other direction: the process listening on the socket must be the data dir's
owner and answer for the same data dir (shmlog.control.connect).
"""
import errno
import grp
import os
import pwd
import socket
import stat
import struct

DOCS = "see docs/security.md"
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; Python does not name it
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

# Held with flock by the broker processes: readable by a shared group would let a member take the
# lock (flock needs only a read fd) and keep the broker from starting, so they stay 0600.
PRIVATE_FILES = frozenset({"supervisor.lock", "persister.lock"})


def user_name(uid, inner=False):
    """'alice (uid 1000)' ('alice, uid 1000' inside parentheses), or 'uid 1234' for a uid
    without a passwd entry."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
    return f"{name}, uid {uid}" if inner else f"{name} (uid {uid})"


def group_name(gid):
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def peer_credentials(sock):
    """(pid, uid, gid) of the process at the other end of a connected unix socket, as the kernel
    recorded them when it connected (or, for a server, when it called listen())."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def peer_groups(sock, uid, gid):
    """The peer's primary and supplementary groups: SO_PEERGROUPS (the peer's credentials at
    connect), else the group database's membership of its user."""
    groups = {gid}
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
        groups.update(struct.unpack(f"{len(raw) // 4}I", raw[:len(raw) // 4 * 4]))
        return groups
    except OSError:
        pass  # ERANGE (more than 256 groups) or an old kernel
    try:
        groups.update(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except (KeyError, OSError):
        pass
    return groups


class Policy:
    """File modes and the control channel's rule, from a parsed broker config."""

    def __init__(self, config, owner=None):
        self.owner = os.geteuid() if owner is None else owner
        self.group = config.get("shmlog.shared.group")
        self.users = frozenset(config.get("shmlog.allowed.users") or ())
        self.groups = frozenset(config.get("shmlog.allowed.groups") or ())
        if self.group is not None:
            self.groups |= {self.group}
        shared = self.group is not None
        self.umask = 0o027 if shared else 0o077
        self.dir_mode = 0o2750 if shared else 0o700  # setgid: new files and dirs take the group
        self.file_mode = 0o640 if shared else 0o600
        # Users or groups beyond the owner and the shared group reach the socket through o+x
        # on the data dir and the run dir; the peer check then admits or refuses them.
        self.others = bool(self.users - {self.owner}) or bool(self.groups - {self.group})
        self.path_mode = self.dir_mode | (0o001 if self.others else 0)
        self.socket_mode = 0o666 if self.others else 0o660 if shared else 0o600

    # ------------------------------------------------------------------ the control channel

    def allows(self, sock):
        """(allowed, uid) for an accepted connection."""
        _, uid, gid = peer_credentials(sock)
        if uid == self.owner or uid in self.users:
            return True, uid
        if self.groups and self.groups & peer_groups(sock, uid, gid):
            return True, uid
        return False, uid

    def refusal(self, uid, data_dir):
        return (f"user {user_name(uid)} is not allowed to use the shmlog broker for {data_dir} "
                f"(owner {user_name(self.owner, inner=True)}); {DOCS}")

    # ------------------------------------------------------------------ files

    def check_owned(self, path, what):
        """Refuse to run on a directory another user owns (its owner could change our files)."""
        st = os.stat(path)
        if st.st_uid != self.owner:
            raise SystemExit(f"shmlog: {what} {path} belongs to {user_name(st.st_uid)}, but this broker runs as "
                             f"{user_name(self.owner)}: a broker runs as the owner of its data dir and log dirs "
                             f"(start it as that user, or use directories of your own); {DOCS}")

    def secure_tree(self, root, top_mode=None, keep=()):
        """Give root and everything under it this policy's modes and group (files created later
        get them from the umask and the setgid dirs). Symlinks and sockets are left alone, as are
        the paths in `keep` (their owner sets them). Returns the problems, one line each."""
        problems = []
        self._secure(root, True, self.dir_mode if top_mode is None else top_mode, problems)
        for parent, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(parent, name)
                if path in keep:
                    continue
                mode = self.file_mode if name not in PRIVATE_FILES else 0o600
                self._secure(path, name in dirs, self.dir_mode if name in dirs else mode, problems)
        return problems

    def _secure(self, path, is_dir, mode, problems):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode) or stat.S_ISDIR(st.st_mode) != is_dir:
            return
        try:
            if self.group is not None and st.st_gid != self.group:
                os.chown(path, -1, self.group, follow_symlinks=False)
            if stat.S_IMODE(st.st_mode) != mode:
                os.chmod(path, mode, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EACCES):
                raise
            problems.append(f"cannot give {path} (owner {user_name(st.st_uid)}) mode {mode:o}"
                            + (f" and group {group_name(self.group)}" if self.group is not None else "")
                            + f": {exc.strerror}")

    def secure_dir(self, path, mode):
        """mkdir path (if missing) and give it mode and the shared group; it must be ours."""
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise SystemExit(f"shmlog: {path} is not a directory")
        self.check_owned(path, "directory")
        if self.group is not None and st.st_gid != self.group:
            os.chown(path, -1, self.group)
        os.chmod(path, mode)


# ---------------------------------------------------------------------- TCP peers on this host

_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_TCP_TIME_WAIT = "06"  # its uid column reads 0 whoever owned the socket: never trusted


def _proc_address(text):
    """An address of /proc/net/tcp{,6} ('0100007F:1F90': 32-bit words in host byte order, the
    port in hex) as (ipv4 or ipv6 packed bytes, port); an IPv4-mapped IPv6 address as IPv4."""
    addr, port = text.split(":")
    raw = b"".join(struct.pack("=I", int(addr[i:i + 8], 16)) for i in range(0, len(addr), 8))
    if len(raw) == 16 and raw[:12] == b"\0" * 10 + b"\xff\xff":
        raw = raw[12:]
    return raw, int(port, 16)


def _packed(address):
    """(host, port, ...) of getsockname()/getpeername() -> (packed address, port)."""
    host, port = address[0], address[1]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    raw = socket.inet_pton(family, host.split("%", 1)[0])
    if len(raw) == 16 and raw[:12] == b"\0" * 10 + b"\xff\xff":
        raw = raw[12:]
    return raw, port


def tcp_peer_uid(sock):
    """The uid owning the other end of an accepted TCP connection whose peer is on this host
    (the same network namespace): the kernel's table of TCP sockets lists the peer's socket with
    our remote address as its local one and our local address as its remote one. None when no
    socket of this host is that peer (a peer on another host or network namespace); LookupError
    when it is one no process holds any more (closed: TIME_WAIT, or an orphan without a file,
    whose uid column the kernel shows as 0); OSError when the table cannot be read."""
    mine, theirs = _packed(sock.getsockname()), _packed(sock.getpeername())
    closed = False
    for table in _TCP_TABLES:
        try:
            f = open(table)
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        with f:
            next(f, None)  # the header
            for line in f:
                fields = line.split()
                if len(fields) < 10 or _proc_address(fields[1]) != theirs or _proc_address(fields[2]) != mine:
                    continue
                if fields[3] == _TCP_TIME_WAIT or fields[9] == "0":
                    closed = True  # keep looking: the 4-tuple may have been reused by a live socket
                    continue
                return int(fields[7])
    if closed:
        raise LookupError("the peer's socket is closed: no process holds it any more")
    return None


def user_groups(uid):
    """The groups of uid's user in the group database (its primary group and those listing it);
    empty for a uid without a passwd entry."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return set()
    try:
        return set(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except OSError:
        return {entry.pw_gid}


def allows_uid(policy, uid):
    """The control channel's rule for a user known only by its uid (no SO_PEERCRED: a TCP peer):
    the owner, a named user, or a member of a named group by the group database."""
    if uid == policy.owner or uid in policy.users:
        return True
    return bool(policy.groups and policy.groups & user_groups(uid))
