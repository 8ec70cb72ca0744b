// CShm: the few C entry points ShmLRU needs that Swift cannot call directly.
//
// Everything here is `static inline`, so no .c file is compiled. It holds only
// what Swift does not call directly; everything else (shmget/shmat/shmdt/shmctl,
// ftok, errno, clocks, kill) is called from Swift through the thin wrappers in
// Region/_Syscalls.swift and Support/_Clock.swift, as swift-system does:
// - the futex syscall (the variadic `syscall` is not importable);
// - process-shared robust pthread mutex attributes and the glibc kind word;
// - acquire/release/relaxed atomics on raw shared memory. Swift could do these
//   too (`Synchronization.Atomic` bound over the segment's memory, or
//   swift-atomics' `UnsafeAtomic(at:)`, a package the core must not depend on);
//   these one-line C11 builtins compile to the same single instructions, and we
//   keep them because every shared word's ordering is then spelled out at its use;
// - the seqlock's intentionally racy copy (a separate frame ThreadSanitizer is
//   told about by name) and a prefetch hint.
// Every function is prefixed `cshm_`.
#ifndef CSHM_SHIM_H
#define CSHM_SHIM_H

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

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
static inline int cshm_mutex_unlock(void *mutex) { return pthread_mutex_unlock((pthread_mutex_t *)mutex); }
static inline int cshm_mutex_consistent(void *mutex) { return pthread_mutex_consistent((pthread_mutex_t *)mutex); }

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
/// Swaps in `v` and returns the old word (sequentially consistent: also orders
/// the stores before it against the loads after it).
static inline uint64_t cshm_exchange_u64(uint64_t *p, uint64_t v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
/// Sets `bits` in the word (acquire-release) and returns the old word.
static inline uint64_t cshm_fetch_or_u64(uint64_t *p, uint64_t bits) { return __atomic_fetch_or(p, bits, __ATOMIC_ACQ_REL); }
/// One spin-wait hint (x86 `pause`, arm64 `yield`).
static inline void cshm_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
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

/// Compares `n` bytes that a peer may be writing at the same time with a
/// private buffer (the keyed store's key check inside a record's seqlock): like
/// `cshm_racy_copy`, the seqlock decides whether the answer is kept, and the
/// race is exempted by name under ThreadSanitizer.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CSHM_RACY_EQUAL_INLINE __attribute__((noinline))
#endif
#endif
#ifndef CSHM_RACY_EQUAL_INLINE
#define CSHM_RACY_EQUAL_INLINE __attribute__((always_inline))  // keep the word compares below in the caller
#endif
CSHM_RACY_EQUAL_INLINE
static inline int cshm_racy_equal(const volatile void *shared, const void *mine, size_t n) {
    const unsigned char *a = (const unsigned char *)shared;
    const unsigned char *b = (const unsigned char *)mine;
    // Keys of 4-16 bytes (the common case) with two overlapping word loads per
    // side, all within the `n` bytes, instead of a call to memcmp.
    if (n >= 8 && n <= 16) {
        uint64_t a0, a1, b0, b1;
        memcpy(&a0, a, 8);
        memcpy(&a1, a + n - 8, 8);
        memcpy(&b0, b, 8);
        memcpy(&b1, b + n - 8, 8);
        return ((a0 ^ b0) | (a1 ^ b1)) == 0;
    }
    if (n >= 4 && n < 8) {
        uint32_t a0, a1, b0, b1;
        memcpy(&a0, a, 4);
        memcpy(&a1, a + n - 4, 4);
        memcpy(&b0, b, 4);
        memcpy(&b1, b + n - 4, 4);
        return ((a0 ^ b0) | (a1 ^ b1)) == 0;
    }
    return memcmp(a, b, n) == 0;
}

/// Asks for the cache line at `p` ahead of its use (a hint: never faults).
static inline void cshm_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

/// The calling thread's kernel id (what /proc/TID names): `syscall` is variadic, so not importable.
static inline int32_t cshm_gettid(void) { return (int32_t)syscall(SYS_gettid); }

#endif
