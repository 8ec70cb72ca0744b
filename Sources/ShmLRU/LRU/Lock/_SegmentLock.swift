import CShm
import Glibc

/// The cache's lock: one 64-bit owner word in the segment, taken with one
/// compare-and-swap and released with one exchange, with futex waits under
/// contention. It replaces glibc's robust pthread mutex for `ShmLRU` (about 200
/// of the ~450 instructions of an exact-LRU get went to that mutex).
///
///     bits 0-29   the owner's thread id (gettid(); 0 for none)
///     bit  30     zero (a word with it set is read as naming a dead owner)
///     bit  31     waiters: some thread sleeps on the low half (futex)
///     bits 32-63  the owner thread's start time (field 22 of /proc/TID/stat,
///                 clock ticks since boot, low 32 bits; 0xFFFFFFFF if the owner
///                 could not read it: "unknown", alive for as long as the thread
///                 exists; 0 is not written, and a word with it names a holder
///                 only if that is the thread's real start time)
///
/// The word is 0 when the lock is free. The owner's identity is part of the word
/// itself, so there is no moment at which the lock is held but the holder unnamed.
///
/// Dead holders: a kernel robust list cannot name a hand-made lock, so a waiter
/// whose short futex wait timed out (1 ms, doubling to 64 ms) reads the owner's
/// /proc entry (`_isRunning`, Support/_ProcessLiveness.swift, the check the
/// store's lock table uses too): a thread that no longer exists, is a zombie, or
/// has another known start time (its id was reused) is dead, and the waiter takes the word over with a
/// compare-and-swap (only one waiter wins) and reports `.previousOwnerDied`, which
/// the cache answers with a rebuild from the records, as it did for EOWNERDEAD.
/// A word that names no live thread (forged, or left by a crash) is therefore
/// recovered the same way. A holder that could not read its own start time (at
/// its descriptor limit, /proc hidden) writes the "unknown" mark: it is never
/// taken over while its thread exists (a start time is read once per thread
/// while a descriptor is free, when a cache is opened, and only a successful
/// read is cached). A live holder, stopped or not, makes lockers wait for
/// their timeout and throw `.lockTimeout`. Locking it again from its holding
/// thread throws at once (EDEADLK). All processes must share one PID namespace
/// (as the store's lock table already assumes).
struct _SegmentLock: @unchecked Sendable {
    let word: UnsafeMutablePointer<UInt64>
    /// The process's thread-specific key for owner words, held here so that the
    /// fast path does not go through the global's lazy initialisation.
    private let ownerKey: pthread_key_t
    #if SHMLRU_TESTING
    /// Test-only kill points (see `_Segment.faults`): nil unless armed.
    private let _faults: Unmanaged<_FaultInjection>?
    #endif

    static let tidMask: UInt64 = 0x3FFF_FFFF
    static let waitersBit: UInt64 = 1 << 31
    /// The first futex wait before a liveness check, and the longest.
    static let firstWaitNanoseconds: Int64 = 1_000_000
    static let longestWaitNanoseconds: Int64 = 64_000_000
    /// Pause-loop turns before the first futex wait (a lock hold is ~100 ns).
    static let spins = 128

    enum Acquired { case clean, previousOwnerDied }

    #if SHMLRU_TESTING
    init(address: UnsafeMutableRawPointer, faults: _FaultInjection?) {
        word = address.assumingMemoryBound(to: UInt64.self)
        ownerKey = _ownerKey
        _faults = faults.map { Unmanaged.passUnretained($0) }
        _ = currentOwner  // read this thread's start time now, while a descriptor is likely free
    }
    #else
    init(address: UnsafeMutableRawPointer) {
        word = address.assumingMemoryBound(to: UInt64.self)
        ownerKey = _ownerKey
        _ = currentOwner  // read this thread's start time now, while a descriptor is likely free
    }
    #endif

    static func initialize(at address: UnsafeMutableRawPointer) {
        address.initializeMemory(as: UInt8.self, repeating: 0, count: _Layout.H.lockReserved)
    }

    @inline(__always)
    private func fault(_ point: _FaultInjection.Point) {
        #if SHMLRU_TESTING
        if let faults = _faults { faults.takeUnretainedValue().reach(point) }
        #endif
    }

    // MARK: Owner words

    /// This thread's owner word (cached per thread; recomputed after a fork).
    @inline(__always)
    var currentOwner: UInt64 {
        let cached = UInt64(UInt(bitPattern: pthread_getspecific(ownerKey)))
        return cached != 0 ? cached : _SegmentLock.computeCurrentOwner()
    }

    @inline(never)
    static func computeCurrentOwner() -> UInt64 {
        let tid = cshm_gettid()
        let start = _processStartTime(tid)
        let owner = UInt64(start.map { UInt32(truncatingIfNeeded: $0) } ?? unknownStart) << 32 | (UInt64(UInt32(bitPattern: tid)) & tidMask)
        if start != nil { _ = pthread_setspecific(_ownerKey, UnsafeRawPointer(bitPattern: UInt(owner))) }  // else retried next time
        return owner
    }

    /// The start-time half of an owner word whose holder could not read its start time.
    static let unknownStart: UInt32 = 0xFFFF_FFFF

    /// The owner word without the waiters bit (what identifies a holder).
    @inline(__always)
    static func identity(_ word: UInt64) -> UInt64 { word & ~waitersBit }

    /// Thread ids above this do not exist on Linux (PID_MAX_LIMIT, 2^22).
    static let largestTid: UInt64 = 1 << 22

    /// True for a word that cannot name any thread (a forged or torn word): no
    /// need to ask /proc, or to wait before taking it over.
    @inline(__always)
    static func namesNoThread(_ word: UInt64) -> Bool {
        let bits = identity(word)
        let tid = bits & tidMask
        return bits & (1 << 30) != 0 || tid == 0 || tid > largestTid
    }

    /// True if the thread a (non-zero) owner word names still runs: it exists, is
    /// not a zombie, and started when the word says (so a reused id is not it); a
    /// word with the unknown start time (its holder could not read it) names a
    /// live holder for as long as its thread exists.
    static func ownerIsAlive(_ word: UInt64) -> Bool {
        if namesNoThread(word) { return false }
        let bits = identity(word)
        let start = UInt32(truncatingIfNeeded: bits >> 32)
        return _isRunning(
            Int32(truncatingIfNeeded: bits & tidMask), start: start == unknownStart ? nil : UInt64(start), startMask: 0xFFFF_FFFF)
    }

    // MARK: Lock and unlock

    /// Takes the lock; `timeoutNanoseconds < 0` waits for ever. A dead owner is
    /// taken over even with a zero timeout.
    @inline(__always)
    func lock(timeoutNanoseconds: Int64) throws(ShmError) -> Acquired {
        let me = currentOwner
        if cshm_cas_u64(word, 0, me) {
            fault(.lockAcquired)
            return .clean
        }
        return try lockContended(me, timeoutNanoseconds: timeoutNanoseconds)
    }

    @inline(__always)
    func unlock() {
        let old = cshm_exchange_u64(word, 0)
        fault(.lockReleasing)
        if old & _SegmentLock.waitersBit != 0 { _ = cshm_futex_wake(lowHalf, 1) }
    }

    /// The futex word: the owner word's low half (tid and waiters bit).
    private var lowHalf: UnsafeMutablePointer<UInt32> {
        UnsafeMutableRawPointer(word).assumingMemoryBound(to: UInt32.self)  // little-endian: bits 0-31
    }

    @inline(never)
    private func lockContended(_ me: UInt64, timeoutNanoseconds: Int64) throws(ShmError) -> Acquired {
        // A short spin first: most holds end within it.
        for _ in 0..<_SegmentLock.spins {
            cshm_cpu_relax()
            let current = cshm_load_relaxed_u64(word)
            if current == 0, cshm_cas_u64(word, 0, me) {
                fault(.lockAcquired)
                return .clean
            }
        }
        let start = _monotonicNanoseconds()
        let deadline: UInt64 =
            timeoutNanoseconds < 0
            ? .max : start.addingReportingOverflow(UInt64(timeoutNanoseconds)).overflow ? .max : start &+ UInt64(timeoutNanoseconds)
        var wait = _SegmentLock.firstWaitNanoseconds
        var checkOwner = false
        // From here on this thread may have slept, so it takes the lock with the
        // waiters bit set (other sleepers may remain: its unlock wakes one).
        let mine = me | _SegmentLock.waitersBit
        while true {
            let current = cshm_load_acquire_u64(word)
            if current == 0 {
                if cshm_cas_u64(word, 0, mine) {
                    fault(.lockAcquired)
                    return .clean
                }
                continue
            }
            if _SegmentLock.identity(current) == me {
                throw ShmError(
                    .systemCall, "lock", errno: EDEADLK,
                    detail: "this thread holds the cache's lock already: do not call the cache from inside withValue")
            }
            if checkOwner || timeoutNanoseconds == 0 || _SegmentLock.namesNoThread(current) {
                checkOwner = false
                if !_SegmentLock.ownerIsAlive(current) {
                    // Take it over; only one waiter's swap succeeds.
                    if cshm_cas_u64(word, current, mine) {
                        fault(.lockTakenOver)
                        return .previousOwnerDied
                    }
                    continue
                }
            }
            let now = _monotonicNanoseconds()
            if now >= deadline {
                let waited = timeoutNanoseconds < 0 ? 0 : timeoutNanoseconds / 1_000_000
                throw ShmError(.lockTimeout, "lock", detail: "held by another process (thread \(current & _SegmentLock.tidMask)) for over \(waited) ms")
            }
            if current & _SegmentLock.waitersBit == 0 {
                guard cshm_cas_u64(word, current, current | _SegmentLock.waitersBit) else { continue }
            }
            fault(.lockWaiting)
            let remaining = deadline &- now
            let slice = remaining < UInt64(wait) ? Int64(remaining) : wait
            let expected = UInt32(truncatingIfNeeded: current | _SegmentLock.waitersBit)
            if cshm_futex_wait(lowHalf, expected, slice) != 0, errno == ETIMEDOUT {
                // Not woken in time: is the holder still there?
                checkOwner = true
                wait = min(wait &* 2, _SegmentLock.longestWaitNanoseconds)
            }
        }
    }
}

/// The thread-specific slot caching each thread's owner word. (Not a C
/// `__thread` variable: the optimiser may split a module into several object
/// files, each with its own copy of a header's static.) A fork's child runs on
/// the forking thread alone, with a new id: its handler clears that thread's word.
private let _ownerKey: pthread_key_t = {
    var key = pthread_key_t()
    precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create")
    pthread_atfork(nil, nil) { _ = pthread_setspecific(_ownerKey, nil) }
    return key
}()
