#if Lifecycle
import Glibc
import ServiceLifecycle
import ShmLRU

/// A ServiceLifecycle `Service` that snapshots a store to a file every
/// `interval` while the process serves, and once more on graceful shutdown (the
/// `ServiceGroup`'s SIGTERM or SIGINT, or `triggerGracefulShutdown()`), so a
/// restarted or moved server comes back warm with
/// `ShmStore.open(key:configuration:restoringFrom:)`.
///
///     let (store, _) = try ShmStore.open(key: 0x5EED, configuration: config, restoringFrom: path)
///     let group = ServiceGroup(
///         services: [server, ShmSegmentsService(store: store), ShmSnapshotService(store: store, path: path)],
///         gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
///
/// A group shuts its services down last first: list this service after
/// `ShmSegmentsService`, so that its last snapshot is taken before the store is
/// detached. Each snapshot runs on a thread of its own (file writes and fsync
/// block), never on Swift's cooperative pool; a failed snapshot is handed to
/// `onSnapshot` and the service goes on (the previous file stays whole). A
/// cancelled group (fast shutdown) ends the service without a last snapshot.
public struct ShmSnapshotService: Service {
    /// The store snapshotted.
    public let store: ShmStore
    /// The snapshot file (replaced whole by each snapshot).
    public let path: String
    /// The time between two snapshots.
    public let interval: Duration
    /// Told of every snapshot's outcome (from the snapshot's thread).
    public let onSnapshot: @Sendable (Result<ShmStore.SnapshotReport, ShmError>) -> Void

    /// A service snapshotting `store` to `path` every `interval` (one minute by
    /// default) and on graceful shutdown.
    public init(
        store: ShmStore, path: String, interval: Duration = .seconds(60),
        onSnapshot: @escaping @Sendable (Result<ShmStore.SnapshotReport, ShmError>) -> Void = { _ in }
    ) {
        self.store = store
        self.path = path
        self.interval = interval
        self.onSnapshot = onSnapshot
    }

    /// Snapshots every `interval` until graceful shutdown, then once more.
    public func run() async throws {
        while !Task.isShuttingDownGracefully {
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            } catch {
                if Task.isShuttingDownGracefully { break }
                if Task.isCancelled { return }  // fast shutdown: no last snapshot
            }
            if Task.isShuttingDownGracefully { break }
            _ = await snapshotNow()
        }
        _ = await snapshotNow()
    }

    /// Takes one snapshot now, on a thread of its own; reports it to `onSnapshot` and returns it.
    @discardableResult
    public func snapshotNow() async -> Result<ShmStore.SnapshotReport, ShmError> {
        let (store, path, onSnapshot) = (self.store, self.path, self.onSnapshot)
        let work: @Sendable () -> Result<ShmStore.SnapshotReport, ShmError> = {
            let result = Result { () throws(ShmError) -> ShmStore.SnapshotReport in try store.snapshot(to: path) }
            onSnapshot(result)
            return result
        }
        return await withCheckedContinuation { continuation in
            guard let thread = _startThread({ continuation.resume(returning: work()) }) else {
                continuation.resume(returning: work())  // no thread to be had: this once, here
                return
            }
            pthread_detach(thread)
        }
    }
}
#endif  // Lifecycle
