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

    init(key: ShmKey, id: Int32, byteCount: Int, isReadOnly: Bool, removeAtExit: Bool, base: UnsafeMutableRawPointer) {
        self.key = key
        self.id = id
        self.byteCount = byteCount
        self.isReadOnly = isReadOnly
        self.removeAtExit = removeAtExit
        self.base = base
    }

    var isAttached: Bool { _attached.load(ordering: .acquiring) }

    /// Unmaps once; later calls do nothing and return false.
    func detach() -> Bool {
        guard _attached.compareExchange(expected: true, desired: false, ordering: .acquiringAndReleasing).exchanged
        else { return false }
        _ = _shmdt(base)
        _Registry.shared.remove(self)
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

    func cleanUpAtExit() { detachAllAndRemoveCreated() }
}
