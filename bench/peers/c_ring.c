/* Plain single-producer single-consumer ring in POSIX shared memory: the physical-limit
 * reference for bench_core.py (peer "C ring"). Compiled by the bench at run time with cc into a
 * temp dir and driven through ctypes from two processes.
 *
 * Fixed-size slots: [u64 length][payload rounded up to 8 bytes]. head and tail count bytes
 * written / read (never wrap), each on its own cache line. Batch style: the producer fills
 * all the free space it sees (at most `batch` records) and then publishes head once; the
 * consumer reads everything up to the head it sees, copying each payload out, and then
 * publishes tail once. Each payload starts with its 8-byte sequence number, which the
 * consumer checks. Waiting sides spin (with a pause), checking a deadline now and then. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    _Alignas(64) uint64_t head;
    _Alignas(64) uint64_t tail;
    _Alignas(64) uint64_t cap;     /* bytes of data area, a multiple of the slot size */
} ring_hdr;

#define HDR 192

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int ring_create(const char *name, uint64_t cap) {
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) return -1;
    if (ftruncate(fd, HDR + cap) != 0) { close(fd); return -2; }
    void *p = mmap(NULL, HDR + cap, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return -3;
    ((ring_hdr *)p)->cap = cap;
    munmap(p, HDR + cap);
    return 0;
}

int ring_unlink(const char *name) { return shm_unlink(name); }

void *ring_attach(const char *name, uint64_t cap) {
    int fd = shm_open(name, O_RDWR, 0600);
    if (fd < 0) return NULL;
    void *p = mmap(NULL, HDR + cap, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

void ring_detach(void *p, uint64_t cap) { munmap(p, HDR + cap); }

/* Bytes published but not read yet (the consumer's check for records beyond the expected ones). */
uint64_t ring_pending(void *p) {
    ring_hdr *h = (ring_hdr *)p;
    return __atomic_load_n(&h->head, __ATOMIC_ACQUIRE) - __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
}

static inline uint64_t slot_bytes(uint32_t rb) { return 8 + (((uint64_t)rb + 7) & ~7ull); }

/* Writes n records of rb bytes, sequence numbers 0..n-1; returns records written (< n only when
 * the consumer stopped reading for stall_ns). */
uint64_t ring_produce(void *p, uint64_t n, uint32_t rb, uint32_t batch, uint64_t stall_ns) {
    ring_hdr *h = (ring_hdr *)p;
    char *data = (char *)p + HDR;
    uint64_t cap = h->cap, slot = slot_bytes(rb);
    char payload[65536];
    if (rb > sizeof payload || rb < 8) return 0;
    memset(payload, 'x', rb);
    uint64_t head = __atomic_load_n(&h->head, __ATOMIC_RELAXED);
    uint64_t tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
    uint64_t i = 0, spins = 0, since = 0;
    while (i < n) {
        uint64_t room = (cap - (head - tail)) / slot;
        if (room == 0) {
            tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
            if ((cap - (head - tail)) / slot == 0) {
                cpu_relax();
                if (!(++spins & 0xffff)) {
                    uint64_t t = mono_ns();
                    if (!since) since = t;
                    else if (t - since > stall_ns) break;
                }
            }
            continue;
        }
        spins = since = 0;
        if (room > batch) room = batch;
        if (room > n - i) room = n - i;
        for (uint64_t k = 0; k < room; k++, i++) {
            char *s = data + (head % cap);
            *(uint64_t *)s = rb;
            memcpy(payload, &i, 8);
            memcpy(s + 8, payload, rb);
            head += slot;
        }
        __atomic_store_n(&h->head, head, __ATOMIC_RELEASE);
    }
    return i;
}

/* Reads until n records arrived (or nothing came for stall_ns). Returns records read; *bytes
 * gets the payload bytes, *gaps the records whose sequence number or length was wrong,
 * *first_gap the index of the first. */
uint64_t ring_consume(void *p, uint64_t n, uint32_t rb, uint64_t stall_ns,
                      uint64_t *bytes, uint64_t *gaps, uint64_t *first_gap) {
    ring_hdr *h = (ring_hdr *)p;
    char *data = (char *)p + HDR;
    uint64_t cap = h->cap, slot = slot_bytes(rb);
    char out[65536];
    uint64_t tail = __atomic_load_n(&h->tail, __ATOMIC_RELAXED);
    uint64_t i = 0, nbytes = 0, ngaps = 0, spins = 0, since = 0;
    *first_gap = UINT64_MAX;
    while (i < n) {
        uint64_t head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
        if (head == tail) {
            cpu_relax();
            if (!(++spins & 0xffff)) {
                uint64_t t = mono_ns();
                if (!since) since = t;
                else if (t - since > stall_ns) break;
            }
            continue;
        }
        spins = since = 0;
        while (tail != head && i < n) {
            const char *s = data + (tail % cap);
            uint64_t len = *(const uint64_t *)s, seq;
            if (len > sizeof out) len = sizeof out;
            memcpy(out, s + 8, len);               /* the consumer takes its copy of the value */
            __asm__ __volatile__("" : : "r"(out) : "memory");   /* keep the copy: `out` escapes */
            memcpy(&seq, out, 8);
            if (seq != i || len != rb) { if (!ngaps++) *first_gap = i; }
            nbytes += len;
            tail += slot;
            i++;
        }
        __atomic_store_n(&h->tail, tail, __ATOMIC_RELEASE);
    }
    *bytes = nbytes;
    *gaps = ngaps;
    return i;
}
