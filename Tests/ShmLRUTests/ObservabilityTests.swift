#if Metrics && Logging && Lifecycle
import Glibc
import InMemoryLogging
import Logging
import MetricsTestKit
import ServiceLifecycle
@testable import ShmLRU
import ShmLRULifecycle
import ShmLRULogging
import ShmLRUMetrics
import Synchronization
import Testing

// The event hook of the core (ShmEvents) and the optional products built on it:
// ShmLRULogging (swift-log), ShmLRUMetrics (swift-metrics), ShmLRULifecycle
// (ServiceLifecycle). Events come from real situations: a peer process holding a
// lock (a timeout), killed while holding it (a recovery), another program's
// segment (a refused attach).

/// Collects the events of one key while `body` runs.
private func recordingEvents<R>(of keys: Set<ShmKey>, _ body: () throws -> R) rethrows -> (R, [ShmEvent]) {
    let seen = Mutex<[ShmEvent]>([])
    let id = ShmEvents.addObserver { event in
        if let key = event.key, keys.contains(key) { seen.withLock { $0.append(event) } }
    }
    defer { ShmEvents.removeObserver(id) }
    let result = try body()
    return (result, seen.withLock { $0 })
}

/// A cache whose lock another process holds (inside `withValue` of `hash`, which
/// must be in the cache) until `kill` kills it.
private func withPeerHoldingTheLock(
    _ key: ShmKey, hash: UInt32 = 1, _ body: (_ kill: () -> Void) throws -> Void
) throws {
    let holder = try spawnHelper(["lru-hold-lock", key.description, String(hash)])
    var killed = false
    let kill = {
        guard !killed else { return }
        killed = true
        holder.kill(SIGKILL)
        _ = holder.wait()
    }
    defer { kill() }
    var ready = false
    while let line = holder.readLine() {
        if line == "ready=1" {
            ready = true
            break
        }
    }
    try #require(ready, "the helper did not take the lock")
    try body(kill)
}

/// Whether process `pid` (a child not yet waited for) exits, becoming a zombie, within `timeout`.
private func exits(_ pid: pid_t, within timeout: Duration) -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    while clock.now < deadline {
        var info = siginfo_t()
        // WNOWAIT: leave the child to SpawnedProcess.wait().
        if waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0, info._sifields._sigchld.si_pid == pid {
            return true
        }
        usleep(10_000)
    }
    return false
}

/// Another program's segment: random bytes.
private func makeForeignSegment(_ key: ShmKey) throws -> ShmRegion {
    let region = try ShmRegion.create(key: key, byteCount: 4096)
    try region.withUnsafeMutableBytes { bytes in for i in bytes.indices { bytes[i] = UInt8.random(in: 1...255) } }
    return region
}

@Suite struct ShmEventsTests {
    @Test func aTimeoutARecoveryAndARefusedAttachAreEvents() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 4)
            try cache.set(1, "one")
            let impatient = try ShmLRU.attach(key: key, options: .init(lockTimeout: .milliseconds(100)))
            try withPeerHoldingTheLock(key) { kill in
                let (_, timeouts) = recordingEvents(of: [key]) {
                    #expect(throws: ShmError.self) { try impatient.set(2, "two") }
                }
                #expect(timeouts.map(\.kind) == [.lockTimeout], "\(timeouts)")
                #expect(timeouts.first?.operation.contains("set") == true)
                kill()
                let (_, recoveries) = try recordingEvents(of: [key]) { try cache.set(2, "two") }
                #expect(recoveries.map(\.kind) == [.recoveredFromDeadHolder], "\(recoveries)")
                #expect(try cache.string(1) == "one", "the entry stays")
            }
        }
        try withKey { key in
            _ = try makeForeignSegment(key)
            let (_, events) = recordingEvents(of: [key]) {
                #expect(throws: ShmError.self) { try ShmLRU.attach(key: key) }
                #expect(throws: ShmError.self) { try ShmStore.attach(key: key) }
                #expect(throws: ShmError.self) { try ShmLRU.probe(key: key) }  // inspection: not an attach
            }
            #expect(events.map(\.kind) == [.attachRefused, .attachRefused], "\(events)")
        }
        // Nothing is delivered once the observer is removed.
        let seen = Atomic<Int>(0)
        let id = ShmEvents.addObserver { _ in seen.add(1, ordering: .relaxed) }
        ShmEvents.removeObserver(id)
        try withKey { key in
            _ = try makeForeignSegment(key)
            _ = try? ShmLRU.attach(key: key)
        }
        #expect(seen.load(ordering: .relaxed) == 0)
    }

    @Test func storeKeyLockEvents() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            let holder = try spawnHelper(["store-hold-lock", key.description, "job"])
            defer {
                holder.kill(SIGKILL)
                _ = holder.wait()
            }
            while let line = holder.readLine(), line != "locked=1" {}
            let (_, timeouts) = recordingEvents(of: [key]) {
                #expect(throws: ShmError.self) { try store.blockingLock("job", timeout: .milliseconds(100)) }
            }
            #expect(timeouts.map(\.kind) == [.lockTimeout], "\(timeouts)")
            #expect((timeouts.first?.waited ?? .zero) >= .milliseconds(100))
            holder.kill(SIGKILL)
            _ = holder.wait()
            let (token, taken) = try recordingEvents(of: [key]) { try store.blockingLock("job", timeout: .seconds(30)) }
            #expect(token.previousHolderDied)
            #expect(taken.map(\.kind).contains(.keyLockHolderDied), "\(taken)")
            try store.unlock("job", token)
        }
    }
}

@Suite struct ShmLRULoggingTests {
    @Test func operatorEventsAreLoggedWithTheirSegment() throws {
        let handler = InMemoryLogHandler()
        let logging = ShmLRULogging.install(logger: Logger(label: "shmlru-test", factory: { _ in handler }))
        defer { logging.uninstall() }
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 4)
            try cache.set(1, "one")
            let impatient = try ShmLRU.attach(key: key, options: .init(lockTimeout: .milliseconds(100)))
            try withPeerHoldingTheLock(key) { kill in
                _ = try? impatient.set(2, "two")
                kill()
                try cache.set(2, "two")
            }
            let mine = handler.entries.filter { $0.metadata["shm.segment"] == .string(key.description) }
            #expect(mine.map(\.level) == [.warning, .warning], "\(mine)")
            #expect(mine.map { $0.metadata["shm.event"] } == [.string("lockTimeout"), .string("recoveredFromDeadHolder")])
            #expect(mine.last?.message.description.contains("died holding") == true)
        }
        try withKey { key in
            _ = try makeForeignSegment(key)
            _ = try? ShmStore.attach(key: key)
            let refused = handler.entries.filter { $0.metadata["shm.segment"] == .string(key.description) }
            #expect(refused.map(\.level) == [.error])
            #expect(refused.first?.metadata["shm.event"] == .string("attachRefused"))
            #expect(refused.first?.metadata["shm.detail"] != nil)
        }
        logging.uninstall()
        let count = handler.entries.count
        try withKey { key in
            _ = try makeForeignSegment(key)
            _ = try? ShmLRU.attach(key: key)
        }
        #expect(handler.entries.count == count, "uninstalled: nothing more is logged")
    }
}

@Suite struct ShmLRUMetricsTests {
    @Test func figuresAndEventsBecomeMetrics() throws {
        try withKey { key in
            let metrics = TestMetrics()
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 4)
            let reporter = ShmLRUMetricsReporter(cache: cache, dimensions: [("app", "test")], factory: metrics)
            defer { reporter.stop() }
            let dims = [("segment", key.description), ("kind", "cache"), ("app", "test")]
            for hash in UInt32(1)...5 { try cache.set(hash, "v\(hash)") }  // 5 inserts into 4 records: 1 eviction
            _ = try cache.string(5)
            _ = try cache.string(1)  // evicted: a miss
            reporter.report()
            #expect(try metrics.expectGauge("shmlru_records", dims).lastValue == 4)
            #expect(try metrics.expectGauge("shmlru_capacity", dims).lastValue == 4)
            #expect(try metrics.expectGauge("shmlru_free_records", dims).lastValue == 0)
            #expect(try metrics.expectCounter("shmlru_inserts", dims).totalValue == 5)
            #expect(try metrics.expectCounter("shmlru_evictions", dims).totalValue == 1)
            #expect(try metrics.expectCounter("shmlru_hits", dims).totalValue == 1)
            #expect(try metrics.expectCounter("shmlru_misses", dims).totalValue == 1)

            // A second report adds only what changed since.
            try cache.remove(5)
            reporter.report()
            #expect(try metrics.expectCounter("shmlru_inserts", dims).totalValue == 5)
            #expect(try metrics.expectCounter("shmlru_deletes", dims).totalValue == 1)
            #expect(try metrics.expectGauge("shmlru_records", dims).lastValue == 3)

            // A lock timeout and a recovery after a dead holder.
            let impatient = try ShmLRU.attach(key: key, options: .init(lockTimeout: .milliseconds(100)))
            try withPeerHoldingTheLock(key, hash: 4) { kill in
                _ = try? impatient.set(9, "nine")
                kill()
                try cache.set(9, "nine")
            }
            reporter.report()
            #expect(try metrics.expectCounter("shmlru_lock_timeouts", dims).totalValue == 1)
            #expect(try metrics.expectCounter("shmlru_recoveries_by_this_process", dims).totalValue == 1)
            #expect(try metrics.expectCounter("shmlru_recoveries", dims).totalValue == 1)
        }
    }

    @Test func aStoresKeyLockWaitsAreTimed() async throws {
        try await withStoreKey { key in
            let metrics = TestMetrics()
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            let reporter = ShmLRUMetricsReporter(store: store, factory: metrics)
            defer { reporter.stop() }
            let dims = [("segment", key.description), ("kind", "store")]
            let token = try #require(try store.tryLock("job"))
            let waiter = Task { try await store.lock("job", timeout: .seconds(30)) }
            #expect(try await eventually { try store.lockState("job").waiters == 1 })
            try store.unlock("job", token)
            let second = try await waiter.value
            try store.unlock("job", second)
            let timer = try metrics.expectTimer("shmlru_key_lock_wait", dims)
            #expect(timer.values.count == 1)
            #expect(timer.values.first.map { $0 > 0 } == true)
            try store.set("a", 1)
            reporter.report()
            #expect(try metrics.expectCounter("shmlru_inserts", dims).totalValue == 1)
        }
    }
}

@Suite struct ShmLRULifecycleTests {
    @Test func gracefulShutdownRemovesTheSegmentsThisProcessCreated() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64), persistent: true)
            let dataKey = store.cache.key
            defer { try? ShmRegion.remove(key: dataKey) }
            let cacheKey = uniqueKey()
            defer { try? ShmRegion.remove(key: cacheKey) }
            let cache = try ShmLRU.create(key: cacheKey, recordSize: 16, capacity: 2, persistent: true)
            // Attached, not created here: only detached.
            let peer = try ShmLRU.attach(key: cacheKey)
            let group = ServiceGroup(
                services: [ShmSegmentsService([.store(store)]), ShmSegmentsService([.cache(peer)], removal: .none)],
                logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
            let running = Task { try await group.run() }
            #expect(ShmRegion.exists(key: key))
            await group.triggerGracefulShutdown()
            try await running.value
            #expect(!ShmRegion.exists(key: key))
            #expect(!ShmRegion.exists(key: dataKey))
            #expect(!peer.region.isAttached)
            #expect(ShmRegion.exists(key: cacheKey), "removal: .none only detaches")
            #expect(try cache.region.attachCount == 1)
        }
    }

    @Test func sigtermToAServerLeavesNoSegment() throws {
        let executable = productsDirectory() + "/GracefulShutdown"
        for withService in [true, false] {
            let key = uniqueKey()
            let server = try SpawnedProcess(executable, ["--key", key.description] + (withService ? [] : ["--without-service"]))
            let ready = server.readLine() ?? ""
            let dataKey = ready.split(separator: " ").first { $0.hasPrefix("data=") }.flatMap { ShmKey(parsing: String($0.dropFirst(5))) }
            defer {
                try? ShmStore.remove(key: key)
                try? ShmRegion.remove(key: key)
                if let dataKey { try? ShmRegion.remove(key: dataKey) }
            }
            #expect(ready.hasPrefix("ready key=\(key)"), "\(ready)")
            let data = try #require(dataKey)
            #expect(ShmRegion.exists(key: key) && ShmRegion.exists(key: data))
            server.kill(SIGTERM)
            // A failure guard, not a measurement: a server that ignores SIGTERM is killed after a minute.
            if !exits(server.pid, within: .seconds(60)) { server.kill(SIGKILL) }
            let run = server.wait()
            if withService {
                #expect(run.status == 0, "\(run.errorOutput)")
                #expect(run.output == "stopped\n")
                #expect(!ShmRegion.exists(key: key), "the store segment is left")
                #expect(!ShmRegion.exists(key: data), "the data segment is left")
                #expect(!ShmRegion.list().contains { $0.key == key || $0.key == data })
            } else {
                // Without the service the signal ends it at once, and the persistent segments stay.
                #expect(run.status == 128 + SIGTERM)
                #expect(ShmRegion.exists(key: key) && ShmRegion.exists(key: data))
            }
        }
    }
}
#endif  // Metrics && Logging && Lifecycle
