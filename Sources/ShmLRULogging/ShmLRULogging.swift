#if Logging
import Logging
import ShmLRU
import Synchronization

/// Logs the events an operator must see (see `ShmEvent`) through swift-log:
/// a recovery after a process died holding a lock, a repaired inconsistency, a
/// lock timeout, a refused attach (warning or error), and waits for store key
/// locks (debug). Install it once, at start-up:
///
///     let logging = ShmLRULogging.install(logger: Logger(label: "shmlru"))
///     …
///     logging.uninstall()   // optional
///
/// Each entry carries the metadata `shm.event`, `shm.segment` (the key),
/// `shm.operation`, and `shm.detail` / `shm.waited_ms` when known.
public final class ShmLRULogging: Sendable {
    private let observer: Mutex<ShmEvents.ObserverID?>

    private init(observer: ShmEvents.ObserverID) { self.observer = Mutex(observer) }

    /// Starts logging every event of this process to `logger`.
    @discardableResult
    public static func install(logger: Logger) -> ShmLRULogging {
        ShmLRULogging(observer: ShmEvents.addObserver { event in log(event, to: logger) })
    }

    /// Stops logging.
    public func uninstall() {
        if let id = observer.withLock({ state in defer { state = nil }; return state }) { ShmEvents.removeObserver(id) }
    }

    /// The level an event is logged at.
    public static func level(of kind: ShmEvent.Kind) -> Logger.Level {
        switch kind {
        case .recoveredFromDeadHolder, .repairedInconsistency, .lockTimeout, .keyLockHolderDied: .warning
        case .attachRefused: .error
        case .keyLockWaited: .debug
        }
    }

    /// Logs one event to `logger` (what an installed hook does for each).
    public static func log(_ event: ShmEvent, to logger: Logger) {
        var metadata: Logger.Metadata = [
            "shm.event": .string(event.kind.rawValue),
            "shm.operation": .string(event.operation),
        ]
        if let key = event.key { metadata["shm.segment"] = .string(key.description) }
        if let detail = event.detail { metadata["shm.detail"] = .string(detail) }
        if let waited = event.waited {
            let (seconds, attoseconds) = waited.components
            metadata["shm.waited_ms"] = .string(String(seconds * 1000 + attoseconds / 1_000_000_000_000_000))
        }
        logger.log(level: level(of: event.kind), "\(message(event.kind))", metadata: metadata)
    }

    private static func message(_ kind: ShmEvent.Kind) -> String {
        switch kind {
        case .recoveredFromDeadHolder: "a process died holding a shared-memory lock; the structure was rebuilt"
        case .repairedInconsistency: "a shared-memory structure was found inconsistent and rebuilt"
        case .lockTimeout: "a shared-memory lock was not free before the timeout"
        case .keyLockHolderDied: "a store key's lock was taken over from a process that died holding it"
        case .keyLockWaited: "waited for a store key's lock"
        case .attachRefused: "refused to attach a shared-memory segment"
        }
    }
}
#endif  // Logging
