#if Redis
import Glibc
import ShmLRU
import Synchronization
import Testing

@testable import ShmLRURedis

// The three holes found by attacking the near cache (issue 25), each with the
// test named after it. Each was seen to fail with its fix taken out (see the
// report of the branch that added them).

/// A TCP server that accepts connections and never answers (a hung Redis):
/// counts the connections it accepted.
final class SilentServer: @unchecked Sendable {
    let port: Int
    private let fd: Int32
    private let stop = Atomic<Bool>(false)
    private let acceptedCount = Atomic<Int>(0)
    private let clients = Mutex<[Int32]>([])
    private let finished = Atomic<Bool>(false)

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0, listen(fd, 64) == 0 else { throw ShmError(.systemCall, "bind/listen", errno: errno) }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        self.fd = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        guard let thread = _startThread({ [self] in acceptLoop() }) else { throw ShmError(.systemCall, "pthread_create") }
        pthread_detach(thread)
    }

    var accepted: Int { acceptedCount.load(ordering: .acquiring) }

    private func acceptLoop() {
        while !stop.load(ordering: .acquiring) {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 20) > 0 else { continue }
            let client = accept(fd, nil, nil)
            if client >= 0 {
                clients.withLock { $0.append(client) }
                acceptedCount.add(1, ordering: .releasing)
            }
        }
        finished.store(true, ordering: .releasing)
    }

    func close() {
        stop.store(true, ordering: .releasing)
        while !finished.load(ordering: .acquiring) { usleep(1_000) }
        for client in clients.withLock({ $0 }) { Glibc.close(client) }
        Glibc.close(fd)
    }
}

@Suite("Redis near cache: the three holes", .serialized, .enabled(if: hasRedis, noRedisMessage))
struct RedisNearCacheHoleTests {
    @Test("stale for good: a loader stalled past the lock timeout never leaves an old value behind")
    func aLoaderStalledPastTheLockTimeoutNeverLeavesAnOldValueBehind() async throws {
        let port = redisPort!
        try await onMachine { storeA in
            try await onMachine { storeB in
                let name = uniqueName("stalled")
                let a = try RedisNearCache(store: storeA, configuration: .init(name: name, port: port))
                let b = try RedisNearCache(store: storeB, configuration: .init(name: name, port: port, lockTimeout: .milliseconds(300)))
                let subscriber = RedisInvalidationSubscriber(cache: b)
                let running = Task { try await subscriber.run() }
                #expect(await eventually(.seconds(10)) { subscriber.role == .active(connected: true) } != nil)
                try await a.set("k", bytes: bytes("old"), timeToLive: .seconds(60))

                // B's load reads "old" from Redis, then stalls for 5 lock timeouts.
                let stalled = Atomic<Bool>(false)
                let release = Atomic<Bool>(false)
                b._afterFetch.withLock {
                    $0 = { _ in
                        guard !stalled.exchange(true, ordering: .acquiringAndReleasing) else { return }
                        while !release.load(ordering: .acquiring) { try? await Task.sleep(for: .milliseconds(5)) }
                    }
                }
                let load = Task { try await b.get("k") }
                #expect(await eventually(.seconds(5)) { stalled.load(ordering: .acquiring) } != nil, "the load reached Redis")
                // Meanwhile machine A writes: B's subscriber hears it while B's loader still stalls.
                let invalidationsBefore = subscriber.invalidationCount
                try await a.set("k", bytes: bytes("new"), timeToLive: .seconds(60))
                #expect(await eventually(.seconds(5)) { subscriber.invalidationCount > invalidationsBefore } != nil, "B heard the write")
                try await Task.sleep(for: .milliseconds(1500))  // 5 × lockTimeout: the old subscriber gave up by now
                release.store(true, ordering: .releasing)
                let loaded = try await load.value
                #expect(text(loaded) == "old", "the load read before the write: it may return the old value to its caller")

                // But it must not leave it behind.
                #expect(text(try b.cachedValue("k")) != "old", "the stalled loader stored the old value after the invalidation")
                #expect(text(try await b.get("k")) == "new")
                try await Task.sleep(for: .milliseconds(200))
                #expect(text(try await b.get("k")) == "new")
                #expect(try b.subscriberStatus()?.isConnected == true)
                running.cancel()
                _ = await running.result
            }
        }
    }

    @Test("dead subscriber: a machine whose only subscriber is SIGKILLed stops serving cached values within heartbeatTimeout")
    func aMachineWhoseOnlySubscriberIsKilledStopsServingCachedValues() async throws {
        let port = redisPort!
        try await onMachine { storeA in
            try await onMachine { storeB in
                let name = uniqueName("deadsub")
                let bound = Duration.seconds(1)
                let a = try RedisNearCache(store: storeA, configuration: .init(name: name, port: port))
                let b = try RedisNearCache(
                    store: storeB,
                    configuration: .init(
                        name: name, port: port, connectTimeout: .milliseconds(200), commandTimeout: .milliseconds(300), heartbeatTimeout: bound))
                let only = try spawnSubscriber(storeB, name: name, port: port)
                defer { only.kill() }
                try await a.set("k", bytes: bytes("old"), timeToLive: .seconds(60))
                #expect(await cachesEventually(b, "k", "old"))

                only.kill(SIGKILL)
                let killed = monotonicNanoseconds()
                try await a.set("k", bytes: bytes("new"), timeToLive: .seconds(60))  // nobody on B hears it
                #expect(text(try b.cachedValue("k")) == "old")
                // Within the bound (plus the polling's slack), B reads Redis instead of its copy.
                let seen = try await eventually(bound + .milliseconds(500)) { try await text(b.get("k")) == "new" }
                #expect(seen != nil, "B still served its cached value \(bound) after its only subscriber died")
                print("dead subscriber: B stopped serving its copy \(Duration.nanoseconds(Int64(monotonicNanoseconds() - killed))) after the SIGKILL (bound \(bound) after the last heartbeat)")
                #expect(try b.subscriberStatus() == nil)
                // Nothing is cached meanwhile, and nothing old is served.
                #expect(try b.cachedValue("k").map { text($0) } != "new", "cached without a live subscriber")
                #expect(text(try await b.get("k")) == "new")

                // A new subscriber makes the machine cache again.
                let next = try spawnSubscriber(storeB, name: name, port: port)
                defer { next.stop() }
                #expect(await cachesEventually(b, "k", "new"))
            }
        }
    }

    @Test("hung Redis: a Redis that accepts and never answers costs one command timeout, not one per call")
    func aRedisThatAcceptsAndNeverAnswersCostsOneCommandTimeout() async throws {
        let server = try SilentServer()
        defer { server.close() }
        try await onMachine { store in
            let timeout = Duration.milliseconds(300)
            let cache = try RedisNearCache(
                store: store,
                configuration: .init(
                    name: uniqueName("hung"), port: server.port, connectTimeout: timeout, commandTimeout: timeout,
                    initialBackoff: .seconds(60), maxBackoff: .seconds(60)))
            let start = monotonicNanoseconds()
            var codes: [RedisNearCacheError.Code] = []
            for i in 0..<10 {
                do throws(RedisNearCacheError) {
                    _ = try await cache.get("k\(i)")
                    Issue.record("a get succeeded against a server that never answers")
                } catch {
                    codes.append(error.code)
                }
            }
            do throws(RedisNearCacheError) {
                try await cache.set("w", bytes: [1], timeToLive: .seconds(1))
                Issue.record("a set succeeded against a server that never answers")
            } catch {
                codes.append(error.code)
            }
            let elapsed = Duration.nanoseconds(Int64(monotonicNanoseconds() - start))
            #expect(codes == Array(repeating: .redisUnavailable, count: 11))
            #expect(server.accepted == 1, "each call connected and waited out its own timeout (\(server.accepted) connections)")
            #expect(cache.circuitBreakerTrips == 1)
            print("hung Redis: 11 calls failed in \(elapsed) (command timeout \(timeout)), \(server.accepted) connection(s)")
        }
    }
}
#endif  // Redis
