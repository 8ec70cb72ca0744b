import Glibc

/// The body of a thread started by `_startThread`.
package final class _ThreadBody: Sendable {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
}

/// Starts a POSIX thread running `body` (blocking waits run there, never on
/// Swift's cooperative pool). Returns the thread, to join or detach; nil if it
/// could not be created. Package-wide: the Redis subscriber starts its thread with it.
package func _startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t? {
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
