import Glibc
import Synchronization

/// The body of a thread started by `_startThread`.
final class _ThreadBody: Sendable {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
}

/// Starts a POSIX thread running `body` (blocking waits run there, never on
/// Swift's cooperative pool). Returns the thread, to join or detach; nil if it
/// could not be created.
func _startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t? {
    let box = Unmanaged.passRetained(_ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(
        &thread, nil,
        { raw in
            guard let raw else { return nil }
            Unmanaged<_ThreadBody>.fromOpaque(raw).takeRetainedValue().run()
            return nil
        }, box)
    guard rc == 0 else {
        Unmanaged<_ThreadBody>.fromOpaque(box).release()
        return nil
    }
    return thread
}

/// A flag set by a task's cancellation handler and polled by a waiting thread.
final class _CancelFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .releasing) }
    var isSet: Bool { flag.load(ordering: .acquiring) }
}
