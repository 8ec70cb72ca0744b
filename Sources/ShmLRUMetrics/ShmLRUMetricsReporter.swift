#if Metrics
import Metrics
import ShmLRU
import Synchronization

/// Reports a cache's (or a store's) health through swift-metrics: gauges of its
/// fill, counters of its changes, reads and recoveries, and counters and a
/// timer of the events an operator watches (lock timeouts, refused attaches,
/// dead lock holders, waits for store key locks).
///
///     let reporter = ShmLRUMetricsReporter(store: store)   // MetricsSystem.factory
///     Task { await reporter.run(every: .seconds(10)) }
///
/// Every metric is labelled `shmlru_…` (or your `prefix`) with the dimensions
/// `segment` (the key, `0x…`) and `kind` (`cache` or `store`), plus yours.
/// Figures from the segment (records, inserts, evictions, recoveries, …) are
/// the same for every process attached to it: aggregate them with max, not sum,
/// or report them from one process. Hits and misses are this process's.
///
/// Counters advance by the difference since the previous `report()`, so a
/// restarted process starts from the segment's figures at its first report.
public final class ShmLRUMetricsReporter: Sendable {
    /// The cache whose figures are reported (a store's data cache for a store).
    public let cache: ShmLRU
    /// The key whose events are counted: the cache's, or the store's.
    public let segmentKey: ShmKey

    private let records: Gauge
    private let capacity: Gauge
    private let free: Gauge
    /// One counter per figure of `figures(_:)`, in its order.
    private let counters: [Counter]
    private let previous: Mutex<[UInt64]?>
    private let lockTimeouts: Counter
    private let attachRefused: Counter
    private let holderDied: Counter
    private let recoveredHere: Counter
    private let keyLockWait: Metrics.Timer
    private let observer: Mutex<ShmEvents.ObserverID?>

    /// A reporter of `cache`'s figures and events.
    public convenience init(
        cache: ShmLRU, prefix: String = "shmlru", dimensions: [(String, String)] = [],
        factory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.init(cache: cache, segmentKey: cache.key, kind: "cache", prefix: prefix, dimensions: dimensions, factory: factory)
    }

    /// A reporter of `store`'s figures (those of its data cache) and events.
    public convenience init(
        store: ShmStore, prefix: String = "shmlru", dimensions: [(String, String)] = [],
        factory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.init(
            cache: store.cache, segmentKey: store.key, kind: "store", prefix: prefix, dimensions: dimensions, factory: factory)
    }

    private init(
        cache: ShmLRU, segmentKey: ShmKey, kind: String, prefix: String, dimensions: [(String, String)],
        factory: any MetricsFactory
    ) {
        self.cache = cache
        self.segmentKey = segmentKey
        let dims = [("segment", segmentKey.description), ("kind", kind)] + dimensions
        func gauge(_ name: String) -> Gauge { Gauge(label: "\(prefix)_\(name)", dimensions: dims, factory: factory) }
        func counter(_ name: String) -> Counter { Counter(label: "\(prefix)_\(name)", dimensions: dims, factory: factory) }
        records = gauge("records")
        capacity = gauge("capacity")
        free = gauge("free_records")
        counters = Self.counterNames.map(counter)
        previous = Mutex(nil)
        lockTimeouts = counter("lock_timeouts")
        attachRefused = counter("attach_refused")
        holderDied = counter("key_lock_holder_died")
        recoveredHere = counter("recoveries_by_this_process")
        keyLockWait = Metrics.Timer(label: "\(prefix)_key_lock_wait", dimensions: dims, factory: factory)
        observer = Mutex(nil)
        let keys: Set<ShmKey> = [segmentKey, cache.key]
        let id = ShmEvents.addObserver { [weak self] event in
            guard let self, let key = event.key, keys.contains(key) else { return }
            self.count(event)
        }
        observer.withLock { $0 = id }
    }

    deinit { stop() }

    /// Stops counting events (figures are reported only by `report()`).
    public func stop() {
        if let id = observer.withLock({ state in defer { state = nil }; return state }) { ShmEvents.removeObserver(id) }
    }

    private static let counterNames = ["inserts", "updates", "deletes", "evictions", "recoveries", "promotions", "hits", "misses"]

    /// The counted figures, in the order of `counterNames`.
    private static func figures(_ s: ShmLRU.Stats) -> [UInt64] {
        [s.inserts, s.updates, s.deletes, s.evictions, s.recoveries, s.promotions, s.hits, s.misses]
    }

    private func count(_ event: ShmEvent) {
        switch event.kind {
        case .lockTimeout: lockTimeouts.increment()
        case .attachRefused: attachRefused.increment()
        case .keyLockHolderDied: holderDied.increment()
        case .recoveredFromDeadHolder, .repairedInconsistency: recoveredHere.increment()
        case .keyLockWaited: if let waited = event.waited { keyLockWait.record(duration: waited) }
        }
    }

    /// Reads the cache's figures once and updates the metrics.
    public func report() {
        let stats = cache.stats
        records.record(stats.count)
        capacity.record(stats.capacity)
        free.record(stats.free)
        let values = Self.figures(stats)
        let before = previous.withLock { state in
            defer { state = values }
            return state
        }
        for (index, counter) in counters.enumerated() {
            let delta = values[index] &- (before?[index] ?? 0)
            if delta > 0, delta <= UInt64(Int64.max) { counter.increment(by: Int64(delta)) }
        }
    }

    /// Calls `report()` every `interval` until the task is cancelled.
    public func run(every interval: Duration = .seconds(10)) async {
        while !Task.isCancelled {
            report()
            do { try await Task.sleep(for: interval) } catch { return }
        }
    }
}
#endif  // Metrics
