import CShm
import Glibc
import Synchronization

/// One `shmat` of this process: the mapping and what we know of it.
/// Shared by the `ShmRegion` that made it and the process registry, so that
/// `detachAll()` and the exit handler reach attachments whose owners are elsewhere.
final class _Attachment: Sendable {
    let key: ShmKey
    let id: Int32
    let byteCount: Int
    let isReadOnly: Bool
    /// Created by this process and to be removed at its normal exit.
    let removeAtExit: Bool
    nonisolated(unsafe) let base: UnsafeMutableRawPointer
    private let _attached = Atomic<Bool>(true)
    /// Threads of this process inside a locked operation on this mapping (waiting
    /// for the segment's lock or holding it): `detach` waits for them to leave.
    private let _inFlight = Atomic<Int>(0)
    /// The segment was replaced by anonymous memory: `deinit` unmaps that.
    private let _placeholder = Atomic<Bool>(false)

    init(key: ShmKey, id: Int32, byteCount: Int, isReadOnly: Bool, removeAtExit: Bool, base: UnsafeMutableRawPointer) {
        self.key = key
        self.id = id
        self.byteCount = byteCount
        self.isReadOnly = isReadOnly
        self.removeAtExit = removeAtExit
        self.base = base
    }

    deinit {
        // No handle refers to the mapping any more, so no operation can be on it.
        if _placeholder.load(ordering: .acquiring) { munmap(base, byteCount) }
    }

    var isAttached: Bool { _attached.load(ordering: .acquiring) }

    /// Enters a locked operation: false (and nothing to leave) once detached.
    /// A detach that has begun waits for every entered operation to `leave()`
    /// before it takes the segment away, so an operation holding the segment's
    /// lock always releases it in the segment, never in a replaced mapping.
    @inline(__always)
    func enter() -> Bool {
        _inFlight.add(1, ordering: .sequentiallyConsistent)
        if _attached.load(ordering: .sequentiallyConsistent) { return true }
        _inFlight.subtract(1, ordering: .sequentiallyConsistent)
        return false
    }

    @inline(__always)
    func leave() { _inFlight.subtract(1, ordering: .sequentiallyConsistent) }

    /// Detaches once; later calls do nothing and return false.
    ///
    /// Safe against operations of other threads (handles are `Sendable`): the
    /// handle is marked detached first (new operations throw `.detached`), then
    /// the locked operations already inside are waited for (each is bounded by
    /// its lock timeout), then the segment's pages are replaced in place by
    /// private zero pages (`mmap(MAP_FIXED)` over the attachment, which detaches
    /// the segment exactly as `shmdt` does). A lock-free read that loaded the
    /// flag just before can only read zeros then, never unmapped memory; the
    /// placeholder pages are unmapped when the last handle goes (`deinit`).
    /// `waitForOperations: false` (the exit handler) marks the handle detached
    /// and leaves the mapping to the kernel's exit: a thread of the exiting
    /// process may still hold the segment's lock, which must stay where the
    /// kernel's robust-mutex cleanup finds it.
    func detach(waitForOperations: Bool = true) -> Bool {
        guard _attached.compareExchange(expected: true, desired: false, ordering: .sequentiallyConsistent).exchanged
        else { return false }
        _Registry.shared.remove(self)
        guard waitForOperations else { return true }
        while _inFlight.load(ordering: .sequentiallyConsistent) != 0 { usleep(100) }
        let protection = isReadOnly ? PROT_READ : PROT_READ | PROT_WRITE
        if mmap(base, byteCount, protection, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == UnsafeMutableRawPointer(bitPattern: -1) {
            _ = _shmdt(base)  // cannot happen short of address-space exhaustion: detach the plain way
        } else {
            _placeholder.store(true, ordering: .releasing)
        }
        return true
    }
}

/// Every live attachment of this process (for `detachAll`, `totalSize` and the exit
/// handler), and every segment it created that is still to be removed at exit.
///
/// The segments to remove are kept apart from the attachments: a creator may drop
/// or detach its region (while a peer still uses the segment) long before it exits,
/// and the segment must still go when it exits normally.
final class _Registry: Sendable {
    static let shared = _Registry()

    private let attachments = Mutex<[ObjectIdentifier: _Attachment]>([:])
    /// Segments this process created (not persistent) and has not removed: id -> key.
    private let created = Mutex<[Int32: ShmKey]>([:])
    private let exitHandlerInstalled = Atomic<Bool>(false)

    func add(_ attachment: _Attachment) {
        attachments.withLock { $0[ObjectIdentifier(attachment)] = attachment }
        if attachment.removeAtExit {
            created.withLock { $0[attachment.id] = attachment.key }
            if exitHandlerInstalled.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged {
                atexit { _Registry.shared.cleanUpAtExit() }
            }
        }
    }

    func remove(_ attachment: _Attachment) {
        _ = attachments.withLock { $0.removeValue(forKey: ObjectIdentifier(attachment)) }
    }

    var all: [_Attachment] { attachments.withLock { Array($0.values) } }

    /// Removes a segment this process created (`IPC_RMID`) if it is still the one
    /// it created (same id and key: ids can be reused after a removal), and forgets it.
    func removeCreated(id: Int32) {
        guard let key = created.withLock({ $0.removeValue(forKey: id) }) else { return }
        if case .success(let info) = _shmStat(id: id), info.key == key.rawValue {
            _ = _shmRemove(id: id)
        }
    }

    /// Forgets a created segment that was removed by other means.
    func forgetCreated(id: Int32) { _ = created.withLock { $0.removeValue(forKey: id) } }

    /// Detaches everything and removes every segment this process created (unless
    /// persistent), including those it detached or dropped earlier. Returns how many
    /// attachments were detached.
    @discardableResult
    func detachAllAndRemoveCreated() -> Int {
        var count = 0
        for attachment in all where attachment.detach() { count += 1 }
        for id in created.withLock({ Array($0.keys) }) { removeCreated(id: id) }
        return count
    }

    /// At exit: every handle is marked detached (later calls throw `.detached`)
    /// and the segments this process created are removed; the mappings go with
    /// the process, so threads still running meanwhile never meet unmapped memory.
    func cleanUpAtExit() {
        for attachment in all { _ = attachment.detach(waitForOperations: false) }
        for id in created.withLock({ Array($0.keys) }) { removeCreated(id: id) }
    }
}
