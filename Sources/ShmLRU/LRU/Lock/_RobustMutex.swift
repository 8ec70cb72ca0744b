import CShm
import Glibc

/// The segment's process-shared, robust pthread mutex.
///
/// When a holder dies (even SIGKILL), the kernel hands the mutex to the next
/// locker with `EOWNERDEAD`; that locker repairs the structure and calls
/// `markConsistent()` before unlocking.
struct _RobustMutex: @unchecked Sendable {
    let address: UnsafeMutableRawPointer
    /// What a robust, process-shared mutex holds in its kind word on this libc.
    static let expectedKind: Int32 = cshm_mutex_expected_kind()
    let expectedKind: Int32

    init(address: UnsafeMutableRawPointer) {
        self.address = address
        expectedKind = _RobustMutex.expectedKind
    }

    /// False if the segment's bytes do not hold a robust, process-shared mutex
    /// (glibc aborts on some foreign kinds, so nothing may lock it).
    var hasExpectedKind: Bool { cshm_mutex_kind(address) == expectedKind }

    enum Acquired { case clean, previousOwnerDied }

    static func initialize(at address: UnsafeMutableRawPointer) throws(ShmError) {
        precondition(cshm_mutex_size() <= _Layout.H.mutexReserved, "pthread_mutex_t outgrew its header line")
        let rc = cshm_mutex_init(address)
        guard rc == 0 else { throw ShmError(.systemCall, "pthread_mutex_init(robust, process-shared)", errno: rc) }
    }

    /// Takes the lock; `timeoutNanoseconds < 0` waits for ever.
    @inline(__always)
    func lock(timeoutNanoseconds: Int64) throws(ShmError) -> Acquired {
        guard hasExpectedKind else {
            throw ShmError(.corrupted, "lock", detail: "the segment's lock is not a robust process-shared mutex")
        }
        let rc = cshm_mutex_lock(address, timeoutNanoseconds)
        if rc == 0 { return .clean }  // the common case, inline in every locked operation
        return try acquired(rc, timeoutNanoseconds: timeoutNanoseconds)
    }

    /// The other outcomes of `lock`, out of line.
    @inline(never)
    private func acquired(_ rc: Int32, timeoutNanoseconds: Int64) throws(ShmError) -> Acquired {
        switch rc {
        case 0: return .clean
        case EOWNERDEAD: return .previousOwnerDied
        case ETIMEDOUT:
            if let dead = deadOwner {
                throw ShmError(
                    .lockTimeout, "lock",
                    detail: "held for over \(timeoutNanoseconds / 1_000_000) ms by thread \(dead), which does not exist "
                        + "(a forged or stale owner): repair() reinitializes the lock")
            }
            throw ShmError(.lockTimeout, "lock", detail: "held by another process for over \(timeoutNanoseconds / 1_000_000) ms")
        case EDEADLK:
            if cshm_mutex_owner_field(address) == cshm_mutex_notrecoverable_mark() { return try unrecoverable() }
            throw ShmError(
                .systemCall, "lock", errno: rc,
                detail: "this thread holds the cache's lock already: do not call the cache from inside withValue")
        case ENOTRECOVERABLE:
            return try unrecoverable()
        default:
            throw ShmError(.systemCall, "pthread_mutex_lock", errno: rc)
        }
    }

    /// The lock is marked not recoverable (a holder died and nobody repaired, or
    /// the word was forged): every lock fails until `reinitializeIfAbandoned`.
    private func unrecoverable() throws(ShmError) -> Acquired {
        cshm_mutex_release_if_mine(address, UInt32(bitPattern: cshm_gettid()))  // glibc leaves its lock word set to us
        throw ShmError(
            .corrupted, "lock", errno: ENOTRECOVERABLE,
            detail: "the segment's lock is marked not recoverable (a holder died unrepaired, or a forged owner): "
                + "repair() reinitializes it when no live thread holds it")
    }

    /// The owner TID the lock word names if that thread does not exist (nil: free,
    /// or held by a live thread, or marked owner-died, which the next locker repairs).
    var deadOwner: UInt32? {
        let word = cshm_mutex_lock_word(address)
        let tid = word & 0x3FFF_FFFF  // FUTEX_TID_MASK
        guard tid != 0, word & 0x4000_0000 == 0 else { return nil }  // FUTEX_OWNER_DIED: recoverable as is
        return _RobustMutex.threadExists(tid) ? nil : tid
    }

    /// Whether a thread (of any process in this PID namespace) has this id.
    static func threadExists(_ tid: UInt32) -> Bool {
        guard tid != 0, tid <= 0x3FFF_FFFF else { return false }
        return access("/proc/\(tid)", F_OK) == 0
    }

    /// Reinitializes the mutex if no live thread can hold it: the lock word names
    /// a thread that does not exist, or the mutex is marked not recoverable and
    /// its word names no live thread. True if it did. An operator's way back from
    /// a forged or abandoned lock (`repair()`); a live holder is never overridden.
    func reinitializeIfAbandoned() throws(ShmError) -> Bool {
        let word = cshm_mutex_lock_word(address)
        let tid = word & 0x3FFF_FFFF
        let holderAlive = tid != 0 && _RobustMutex.threadExists(tid)
        let notRecoverable = cshm_mutex_owner_field(address) == cshm_mutex_notrecoverable_mark()
        let abandoned = tid != 0 && !holderAlive && word & 0x4000_0000 == 0
        guard !holderAlive, notRecoverable || abandoned || !hasExpectedKind else { return false }
        try _RobustMutex.initialize(at: address)
        return true
    }

    func markConsistent() { _ = cshm_mutex_consistent(address) }
    @inline(__always) func unlock() { _ = cshm_mutex_unlock(address) }
}
