// CShm: the few C entry points ShmLRU needs that Swift cannot call directly.
//
// Everything here is `static inline`, so no .c file is compiled: SysV shared
// memory (shmget/shmat/shmdt/shmctl), the futex syscall (variadic `syscall`
// is not importable), process-shared robust pthread mutexes, and C11-style
// atomics on raw shared memory (Swift's own atomics only cover memory Swift
// allocates).  Every function is prefixed `cshm_`.
#ifndef CSHM_SHIM_H
#define CSHM_SHIM_H

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

// MARK: - SysV shared memory

static inline int cshm_errno(void) { return errno; }
static inline void cshm_set_errno(int value) { errno = value; }

static inline int cshm_shmget(int32_t key, size_t size, int flags) {
    return shmget((key_t)key, size, flags);
}
static inline void *cshm_shmat(int shmid, int read_only) {
    return shmat(shmid, NULL, read_only ? SHM_RDONLY : 0);
}
static inline int cshm_shmat_failed(const void *address) {
    return address == (void *)-1;
}
static inline int cshm_shmdt(const void *address) { return shmdt(address); }
static inline int cshm_shm_remove(int shmid) { return shmctl(shmid, IPC_RMID, NULL); }

/// The kernel's view of a segment (`IPC_STAT`), reduced to what Swift needs.
typedef struct {
    int32_t key;
    uint32_t mode;
    uint64_t size;
    uint64_t attach_count;
    int32_t creator_pid;
    int32_t last_pid;
    uint32_t owner_uid;
} cshm_segment_info;

static inline int cshm_shm_stat(int shmid, cshm_segment_info *out) {
    struct shmid_ds ds;
    if (shmctl(shmid, IPC_STAT, &ds) != 0) return -1;
    out->key = (int32_t)ds.shm_perm.__key;
    out->mode = (uint32_t)ds.shm_perm.mode & 0777u;
    out->size = (uint64_t)ds.shm_segsz;
    out->attach_count = (uint64_t)ds.shm_nattch;
    out->creator_pid = (int32_t)ds.shm_cpid;
    out->last_pid = (int32_t)ds.shm_lpid;
    out->owner_uid = (uint32_t)ds.shm_perm.uid;
    return 0;
}

static inline int32_t cshm_ftok(const char *path, int id) { return (int32_t)ftok(path, id); }

static inline int cshm_ipc_creat(void) { return IPC_CREAT; }
static inline int cshm_ipc_excl(void) { return IPC_EXCL; }

// MARK: - futex (shared, not private: waiters live in other processes)

/// Waits while `*address == expected`, at most `timeout_ns` (negative: forever).
/// Returns 0 when woken, or -1 with errno EAGAIN (value differed), ETIMEDOUT, EINTR.
static inline int cshm_futex_wait(uint32_t *address, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tsp = &ts;
    }
    return (int)syscall(SYS_futex, address, FUTEX_WAIT, expected, tsp, NULL, 0);
}
/// Wakes up to `count` waiters; returns how many were woken, or -1.
static inline int cshm_futex_wake(uint32_t *address, int count) {
    return (int)syscall(SYS_futex, address, FUTEX_WAKE, count, NULL, NULL, 0);
}

// MARK: - process-shared robust mutex

static inline size_t cshm_mutex_size(void) { return sizeof(pthread_mutex_t); }

static inline int cshm_mutex_init(void *mutex) {
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (rc != 0) return rc;
    rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (rc == 0) rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    // Error-checking: a thread that locks it again gets EDEADLK at once instead of
    // deadlocking itself (e.g. calling the cache from inside `withValue`).
    if (rc == 0) rc = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    if (rc == 0) rc = pthread_mutex_init((pthread_mutex_t *)mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    return rc;
}

/// 0, EOWNERDEAD (acquired; the previous owner died holding it), ENOTRECOVERABLE,
/// ETIMEDOUT (only with a timeout), or another errno.  `timeout_ns < 0` waits forever.
static inline int cshm_mutex_lock(void *mutex, int64_t timeout_ns) {
    pthread_mutex_t *m = (pthread_mutex_t *)mutex;
    if (timeout_ns < 0) return pthread_mutex_lock(m);
    int rc = pthread_mutex_trylock(m);
    if (rc != EBUSY) return rc;
    struct timespec deadline;  // pthread_mutex_timedlock measures CLOCK_REALTIME
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)(timeout_ns / 1000000000);
    deadline.tv_nsec += (long)(timeout_ns % 1000000000);
    if (deadline.tv_nsec >= 1000000000) { deadline.tv_sec += 1; deadline.tv_nsec -= 1000000000; }
    return pthread_mutex_timedlock(m, &deadline);
}
/// The mutex's kind word (glibc's `__data.__kind`). A corrupt or hostile segment
/// can name a priority-inheriting or -protecting kind there, on which glibc's
/// lock asserts (aborts the process): the lock checks it before every use.
static inline int cshm_mutex_kind(const void *mutex) {
#ifdef __GLIBC__
    return __atomic_load_n(&((const pthread_mutex_t *)mutex)->__data.__kind, __ATOMIC_RELAXED);
#else
    (void)mutex;
    return 0;
#endif
}
/// The kind word of a freshly initialized robust, process-shared mutex.
static inline int cshm_mutex_expected_kind(void) {
    pthread_mutex_t fresh;
    if (cshm_mutex_init(&fresh) != 0) return -1;
    int kind = cshm_mutex_kind(&fresh);
    pthread_mutex_destroy(&fresh);
    return kind;
}
/// The mutex's lock word (glibc's `__data.__lock`: owner TID | FUTEX_WAITERS |
/// FUTEX_OWNER_DIED) and owner field (`__data.__owner`: TID, or glibc's
/// INCONSISTENT / NOTRECOVERABLE marks). 0 on other libcs.
static inline uint32_t cshm_mutex_lock_word(const void *mutex) {
#ifdef __GLIBC__
    return (uint32_t)__atomic_load_n(&((const pthread_mutex_t *)mutex)->__data.__lock, __ATOMIC_ACQUIRE);
#else
    (void)mutex;
    return 0;
#endif
}
static inline int cshm_mutex_owner_field(const void *mutex) {
#ifdef __GLIBC__
    return __atomic_load_n(&((const pthread_mutex_t *)mutex)->__data.__owner, __ATOMIC_RELAXED);
#else
    (void)mutex;
    return 0;
#endif
}
static inline int cshm_mutex_notrecoverable_mark(void) { return 0x7ffffffe; /* glibc PTHREAD_MUTEX_NOTRECOVERABLE */ }
/// glibc's trylock returns ENOTRECOVERABLE with the lock word still holding the
/// caller's TID (it unlocks only if the word held that TID before): the next lock
/// by this thread then fails with EDEADLK. Gives the word back if it is ours.
static inline void cshm_mutex_release_if_mine(void *mutex, uint32_t tid) {
#ifdef __GLIBC__
    int *word = &((pthread_mutex_t *)mutex)->__data.__lock;
    int expected = (int)tid;
    if (!__atomic_compare_exchange_n(word, &expected, 0, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
        expected = (int)(tid | 0x80000000u);  // FUTEX_WAITERS
        if (__atomic_compare_exchange_n(word, &expected, 0, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
            syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
    }
#else
    (void)mutex; (void)tid;
#endif
}
static inline uint32_t cshm_gettid(void) { return (uint32_t)syscall(SYS_gettid); }
static inline int cshm_mutex_unlock(void *mutex) { return pthread_mutex_unlock((pthread_mutex_t *)mutex); }
static inline int cshm_mutex_consistent(void *mutex) { return pthread_mutex_consistent((pthread_mutex_t *)mutex); }
static inline int cshm_eownerdead(void) { return EOWNERDEAD; }
static inline int cshm_enotrecoverable(void) { return ENOTRECOVERABLE; }
static inline int cshm_edeadlk(void) { return EDEADLK; }

// MARK: - atomics on shared memory

static inline uint32_t cshm_load_acquire_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint32_t cshm_load_relaxed_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void cshm_store_release_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void cshm_store_relaxed_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline uint64_t cshm_load_acquire_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint64_t cshm_load_relaxed_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void cshm_store_release_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void cshm_store_relaxed_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline uint32_t cshm_fetch_add_u32(uint32_t *p, uint32_t v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
static inline uint64_t cshm_fetch_add_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline bool cshm_cas_u32(uint32_t *p, uint32_t expected, uint32_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline bool cshm_cas_u64(uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline void cshm_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void cshm_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void cshm_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/// Copies bytes that a peer may be writing at the same time.  The seqlock around
/// the copy decides whether the bytes are kept; this only keeps the compiler
/// from assuming they are stable.  The race is intended: ThreadSanitizer is told
/// so by name (Tests/tsan-suppressions.txt), so keep this a separate, uninlined
/// frame under the sanitizer.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
__attribute__((noinline))
#endif
#endif
static inline void cshm_racy_copy(void *dst, const volatile void *src, size_t n) {
    memcpy(dst, (const void *)src, n);
}

/// Asks for the cache line at `p` ahead of its use (a hint: never faults).
static inline void cshm_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

// MARK: - clocks and processes

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the machine.
static inline uint64_t cshm_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
static inline uint64_t cshm_monotonic_coarse_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
static inline int cshm_process_alive(int32_t pid) {
    if (pid <= 0) return 0;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

#endif
