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

/// Every live attachment of this process (for `detachAll`, `totalSize` and the exit handler).
final class _Registry: Sendable {
    static let shared = _Registry()

    private let attachments = Mutex<[ObjectIdentifier: _Attachment]>([:])
    /// Segments this process created (not persistent) and has not removed yet: removed
    /// at normal exit even if detached earlier, so an early detach cannot leak them.
    private let created = Mutex<Set<Int32>>([])
    private let exitHandlerInstalled = Atomic<Bool>(false)

    func add(_ attachment: _Attachment) {
        attachments.withLock { $0[ObjectIdentifier(attachment)] = attachment }
        if attachment.removeAtExit { _ = created.withLock { $0.insert(attachment.id) } }
        if attachment.removeAtExit,
            exitHandlerInstalled.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged
        {
            atexit { _Registry.shared.cleanUpAtExit() }
        }
    }

    func remove(_ attachment: _Attachment) {
        _ = attachments.withLock { $0.removeValue(forKey: ObjectIdentifier(attachment)) }
    }

    var all: [_Attachment] { attachments.withLock { Array($0.values) } }

    /// Removes a segment this process created and forgets it.
    func removeCreated(id: Int32) {
        forgetCreated(id: id)
        _ = _shmRemove(id: id)
    }

    /// Forgets a segment removed by other means (its id may be reused by the kernel).
    func forgetCreated(id: Int32) {
        _ = created.withLock { $0.remove(id) }
    }

    /// Detaches everything; removes the segments this process created (unless
    /// persistent). Peers still attached keep their mapping until they detach.
    func cleanUpAtExit() {
        for attachment in all { _ = attachment.detach() }
        for id in created.withLock({ ids in defer { ids.removeAll() }; return ids }) {
            _ = _shmRemove(id: id)
        }
    }
}
