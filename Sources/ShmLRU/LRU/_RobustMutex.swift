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
            throw ShmError(.lockTimeout, "lock", detail: "held by another process for over \(timeoutNanoseconds / 1_000_000) ms")
        case EDEADLK:
            throw ShmError(
                .systemCall, "lock", errno: rc,
                detail: "this thread holds the cache's lock already: do not call the cache from inside withValue")
        case ENOTRECOVERABLE:
            throw ShmError(.corrupted, "lock", errno: rc, detail: "the lock was left unrecoverable")
        default:
            throw ShmError(.systemCall, "pthread_mutex_lock", errno: rc)
        }
    }

    func markConsistent() { _ = cshm_mutex_consistent(address) }
    @inline(__always) func unlock() { _ = cshm_mutex_unlock(address) }
}
