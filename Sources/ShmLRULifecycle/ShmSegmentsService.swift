#if Lifecycle
import Glibc
import ServiceLifecycle
import ShmLRU

/// A ServiceLifecycle `Service` that owns a process's shared-memory handles and
/// releases them on graceful shutdown (the `ServiceGroup`'s SIGTERM or SIGINT,
/// or `triggerGracefulShutdown()`): it detaches every handle and, for the
/// segments this process created, removes them, so a server stopped by its
/// supervisor leaves nothing behind. A segment another process created is only
/// detached: its creator removes it.
///
///     let store = try ShmStore.create(key: 0x5EED, persistent: true)
///     let group = ServiceGroup(
///         services: [server, ShmSegmentsService(store: store)],
///         gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
///     try await group.run()
///
/// (`persistent: true` keeps the segments when the process dies without a
/// graceful shutdown, so a restarted server finds its data; without it, the
/// library removes a created segment at a normal exit anyway.)
public struct ShmSegmentsService: Service {
    /// One handle the service releases.
    public enum Handle: Sendable {
        /// A cache: detached; removed if this process created it.
        case cache(ShmLRU)
        /// A store: detached; both its segments removed if this process created it.
        case store(ShmStore)
        /// A plain region: detached; removed if this process created it.
        case region(ShmRegion)
    }

    /// Which segments are removed at shutdown.
    public enum Removal: Sendable, Hashable {
        /// Those this process created (the default).
        case createdByThisProcess
        /// None: only detach.
        case none
    }

    /// The handles released at shutdown.
    public let handles: [Handle]
    /// Which segments are removed at shutdown.
    public let removal: Removal

    /// A service releasing `handles`.
    public init(_ handles: [Handle], removal: Removal = .createdByThisProcess) {
        self.handles = handles
        self.removal = removal
    }

    /// A service releasing one store (its two segments).
    public init(store: ShmStore, removal: Removal = .createdByThisProcess) { self.init([.store(store)], removal: removal) }

    /// A service releasing one cache.
    public init(cache: ShmLRU, removal: Removal = .createdByThisProcess) { self.init([.cache(cache)], removal: removal) }

    /// Waits for graceful shutdown, then releases the handles. Also releases them
    /// when the task is cancelled (the group's fast shutdown).
    public func run() async throws {
        try? await gracefulShutdown()
        release()
    }

    /// Detaches every handle and removes the segments the removal policy names.
    /// Safe to call more than once; errors are ignored (a segment already removed
    /// by another process is fine).
    public func release() {
        let me = getpid()
        let creators = Dictionary(ShmRegion.list().map { ($0.id, $0.creatorPID) }, uniquingKeysWith: { first, _ in first })
        let created = { (region: ShmRegion) -> Bool in
            region.isAttached && creators[region.id] == me
        }
        for handle in handles {
            switch handle {
            case .cache(let cache):
                if removal == .createdByThisProcess, created(cache.region) { try? cache.region.remove() }
                _ = try? cache.detach()
            case .store(let store):
                let storeCreated = ShmRegion.list().first { $0.key == store.key }?.creatorPID == me
                if removal == .createdByThisProcess, storeCreated || created(store.cache.region) { try? store.remove() }
                try? store.detach()
            case .region(let region):
                if removal == .createdByThisProcess, created(region) { try? region.remove() }
                _ = try? region.detach()
            }
        }
    }
}
#endif  // Lifecycle
