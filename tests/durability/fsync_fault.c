/* Fault injection for tests/durability/test_fsync_failure.py: an LD_PRELOAD shim that makes
 * fsync/fdatasync of matching files fail with EIO, the way a failing disk does.
 *
 * Armed through a control file named by SHMLOG_TEST_FSYNC_CONTROL, read on every call:
 *     "<count> <glob>"   fail the next <count> syncs of files whose path matches <glob>
 *                        (fnmatch); count -1: every one of them; 0 or no file: none.
 * A failed sync also does what Linux may do to the dirty pages behind it: they are gone.
 * The shim overwrites the bytes the file gained since its last good sync with zeros (what
 * the disk holds for blocks that were never written), so a caller that trusts a later
 * successful sync acknowledges bytes that are not there. Each injected failure is appended
 * to SHMLOG_TEST_FSYNC_LOG as "<path> <from byte> <to byte>". Test-only; never shipped. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define TRACKED 512

static struct {
    dev_t dev;
    ino_t ino;
    off_t synced;
} tracked[TRACKED];
static int n_tracked;

static off_t *synced_size(const struct stat *st) {
    for (int i = 0; i < n_tracked; i++)
        if (tracked[i].dev == st->st_dev && tracked[i].ino == st->st_ino) return &tracked[i].synced;
    if (n_tracked == TRACKED) return NULL;
    tracked[n_tracked].dev = st->st_dev;
    tracked[n_tracked].ino = st->st_ino;
    tracked[n_tracked].synced = 0; /* never synced through us: created since (a new segment) */
    return &tracked[n_tracked++].synced;
}

/* 1: this call must fail (the control file's count is consumed under its lock). */
static int armed_for(const char *path) {
    const char *control = getenv("SHMLOG_TEST_FSYNC_CONTROL");
    if (!control) return 0;
    int fd = open(control, O_RDWR | O_CLOEXEC);
    if (fd < 0) return 0;
    int fail = 0;
    if (flock(fd, LOCK_EX) == 0) {
        char buf[PATH_MAX + 32];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        buf[n > 0 ? n : 0] = 0;
        long count = 0;
        char glob[PATH_MAX];
        if (sscanf(buf, "%ld %4095s", &count, glob) == 2 && count != 0 && fnmatch(glob, path, 0) == 0) {
            fail = 1;
            if (count > 0) {
                int len = snprintf(buf, sizeof buf, "%ld %s\n", count - 1, glob);
                if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)len, 0) != len) fail = 1;
            }
        }
        flock(fd, LOCK_UN);
    }
    close(fd);
    return fail;
}

static void note(const char *path, off_t from, off_t to) {
    const char *log = getenv("SHMLOG_TEST_FSYNC_LOG");
    if (!log) return;
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return;
    char line[PATH_MAX + 64];
    int len = snprintf(line, sizeof line, "%s %lld %lld\n", path, (long long)from, (long long)to);
    if (write(fd, line, (size_t)len) != len) { /* the test sees a missing line */ }
    close(fd);
}

static int sync_or_fail(int fd, int (*real)(int)) {
    char link[64], path[PATH_MAX];
    struct stat st;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return real(fd);
    path[n] = 0;
    off_t *synced = synced_size(&st);
    if (!armed_for(path)) {
        int rc = real(fd);
        if (rc == 0 && synced) *synced = st.st_size;
        return rc;
    }
    off_t from = synced ? *synced : 0;
    if (from < st.st_size) { /* the dirty pages are lost: the disk never got these bytes */
        int w = open(path, O_WRONLY | O_CLOEXEC);
        if (w >= 0) {
            static const char zeros[65536];
            for (off_t at = from; at < st.st_size;) {
                size_t len = (size_t)(st.st_size - at) < sizeof zeros ? (size_t)(st.st_size - at) : sizeof zeros;
                ssize_t done = pwrite(w, zeros, len, at);
                if (done <= 0) break;
                at += done;
            }
            close(w);
        }
    }
    note(path, from, st.st_size);
    errno = EIO;
    return -1;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return sync_or_fail(fd, real);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return sync_or_fail(fd, real);
}
