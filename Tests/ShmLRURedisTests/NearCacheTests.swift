#if Redis
import Glibc
import ShmLRU
import Testing

@testable import ShmLRURedis

// The near cache against a real redis-server, with real processes: each
// "machine" is a ShmStore of its own (different keys) with its own subscriber
// process (Tests/ShmLRURedisTestHelper). Deadlines are the feature's behaviour
// (a poll with a deadline), not speed claims; the latencies are printed.

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
func text(_ value: [UInt8]?) -> String? { value.map { String(decoding: $0, as: UTF8.self) } }

/// `key` is read as `value` and then held by the machine's store. A read may race
/// with the invalidation of the write it already reflects (that message removes
/// the fresh copy, harmlessly), so read until the copy stays.
func cachesEventually(_ cache: RedisNearCache, _ key: String, _ value: String) async -> Bool {
    await eventually(.seconds(1)) {
        (try? await cache.get(key)).flatMap { text($0) } == value && (try? cache.cachedValue(key)).flatMap { text($0) } == value
    } != nil
}

@Suite("Redis near cache", .serialized, .enabled(if: hasRedis, noRedisMessage))
struct RedisNearCacheTests {
    @Test("read-through: four processes missing at once load from Redis once (one GET)")
    func readThroughLoadsOncePerMachine() async throws {
        let port = redisPort!
        try await onMachine { store in
            let name = uniqueName("flight")
            let cache = try RedisNearCache(store: store, configuration: .init(name: name, port: port))
            let subscriber = try spawnSubscriber(store, name: name, port: port)
            defer { subscriber.stop() }
            try redis(port, "SET", "\(name):k", "v1", "PX", "60000")
            // Hold the key's load lock until all four have missed and queue for it:
            // they then really race for the one load.
            let lockKey = cache._loadLock("k")
            let token = try await store.lock(lockKey)
            var released = false
            defer { if !released { try? store.unlock(lockKey, token) } }
            let workers = try (0..<4).map { _ in try spawnHelper(["get", String(store.key.unsignedValue), name, String(port), "k"]) }
            for worker in workers { #expect(worker.waitForLine("ready") != nil) }
            let before = try getCalls(port)
            try store.set("go", bytes: [1])
            let queued = waitFor(.seconds(20)) { (try? store.lockState(lockKey).waiters) == 4 }
            #expect(queued != nil, "the four processes missed and queued for the load lock")
            try store.unlock(lockKey, token)
            released = true
            for worker in workers { #expect(worker.waitForLine("value=", timeout: .seconds(20)) == "value=v1") }
            let after = try getCalls(port)
            #expect(after - before == 1, "exactly one Redis GET for the machine (\(before) → \(after))")
            #expect(text(try cache.cachedValue("k")) == "v1")
            // Kept locally for the time Redis had left for it (PTTL).
            guard case .remaining(let left)? = try store.timeToLive("k") else {
                Issue.record("the local copy has no time to live")
                return
            }
            #expect(left <= .seconds(60) && left > .seconds(30))
        }
    }

    @Test("write-through: a write on machine A is seen on machine B within 100 ms")
    func aWriteIsSeenOnAnotherMachine() async throws {
        let port = redisPort!
        try await onMachine { storeA in
            try await onMachine { storeB in
                let name = uniqueName("ab")
                let a = try RedisNearCache(store: storeA, configuration: .init(name: name, port: port))
                let b = try RedisNearCache(store: storeB, configuration: .init(name: name, port: port))
                let subscriberA = try spawnSubscriber(storeA, name: name, port: port)
                defer { subscriberA.stop() }
                let subscriberB = try spawnSubscriber(storeB, name: name, port: port)
                defer { subscriberB.stop() }
                var latencies: [Duration] = []
                for round in 0..<20 {
                    try await a.set("k", bytes: bytes("v\(round)"), timeToLive: .seconds(60))
                    #expect(text(try a.cachedValue("k")) == "v\(round)", "the writer's machine holds its write")
                    let seen = try await eventually(.milliseconds(100)) { try await text(b.get("k")) == "v\(round)" }
                    #expect(seen != nil, "round \(round): machine B still served the old value after 100 ms")
                    if let seen { latencies.append(seen) }
                    #expect(await cachesEventually(b, "k", "v\(round)"), "B caches what it loaded")
                }
                let sorted = latencies.sorted()
                if let max = sorted.last {
                    print("invalidation A → B: median \(sorted[sorted.count / 2]), max \(max) over \(sorted.count) writes")
                }
                try await a.remove("k")
                #expect(await eventually(.milliseconds(100)) { (try? await b.get("k")) == .some(nil) } != nil, "a removal is seen too")
            }
        }
    }

    @Test("a SIGKILLed subscriber is replaced within 1 s, and no invalidation is lost")
    func aStandbyTakesOver() async throws {
        let port = redisPort!
        try await onMachine { storeA in
            try await onMachine { storeB in
                let name = uniqueName("takeover")
                let a = try RedisNearCache(store: storeA, configuration: .init(name: name, port: port))
                let b = try RedisNearCache(store: storeB, configuration: .init(name: name, port: port))
                let subscriberA = try spawnSubscriber(storeA, name: name, port: port)
                defer { subscriberA.stop() }
                let first = try spawnSubscriber(storeB, name: name, port: port)
                defer { first.kill() }
                var standbys = [
                    try spawnSubscriber(storeB, name: name, port: port, until: "standby"),
                    try spawnSubscriber(storeB, name: name, port: port, until: "standby"),
                ]
                defer { for standby in standbys { standby.send(SIGCONT); standby.stop() } }
                #expect(try b.subscriberStatus() == .init(pid: first.pid, isConnected: true))

                // 1. The active subscriber is SIGKILLed: a standby takes over within 1 s.
                first.kill(SIGKILL)
                let killed = monotonicNanoseconds()
                let tookOver = waitFor(.seconds(1)) {
                    guard let status = try? b.subscriberStatus() else { return false }
                    return status.isConnected && standbys.contains { $0.pid == status.pid }
                }
                #expect(tookOver != nil, "no standby took over within 1 s")
                print("takeover after SIGKILL: \(Duration.nanoseconds(Int64(monotonicNanoseconds() - killed))) (subscribed)")
                guard let second = try b.subscriberStatus().flatMap({ status in standbys.first { $0.pid == status.pid } }) else { return }
                standbys.removeAll { $0 === second }
                defer { second.kill() }

                // After the takeover every invalidation arrives.
                for i in 0..<10 {
                    try await a.set("k\(i)", bytes: bytes("old"), timeToLive: .seconds(60))
                    #expect(await cachesEventually(b, "k\(i)", "old"))
                }
                for i in 0..<10 { try await a.set("k\(i)", bytes: bytes("new"), timeToLive: .seconds(60)) }
                for i in 0..<10 {
                    let seen = try await eventually(.milliseconds(500)) { try await text(b.get("k\(i)")) == "new" }
                    #expect(seen != nil, "k\(i): invalidation lost after the takeover")
                }

                // 2. A write published while machine B has no subscriber at all (the last
                // standby is stopped while the active one is killed) is not served stale
                // after the takeover: the new subscriber invalidates the machine's copies.
                // B writes it itself: its copy is then certain, with no invalidation of it still on its way.
                try await b.set("gap", bytes: bytes("old"), timeToLive: .seconds(60))
                #expect(text(try b.cachedValue("gap")) == "old")
                let last = standbys[0]
                last.send(SIGSTOP)
                second.kill(SIGKILL)
                try await a.set("gap", bytes: bytes("new"), timeToLive: .seconds(60))
                #expect(text(try b.cachedValue("gap")) == "old", "nobody on B heard the write")
                last.send(SIGCONT)
                #expect(waitFor(.seconds(1)) { (try? b.subscriberStatus()) == .init(pid: last.pid, isConnected: true) } != nil)
                #expect(text(try await b.get("gap")) == "new", "a write published while B had no subscriber")
            }
        }
    }

    @Test("Redis restarted: hits served while down, loads fail typed, then the near cache is invalidated and served correctly")
    func aRedisRestartInvalidatesTheNearCache() async throws {
        let port = freePort()
        var server = try startRedisServer(port: port)
        defer { server.kill() }
        try await onMachine { store in
            let name = uniqueName("restart")
            let cache = try RedisNearCache(store: store, configuration: .init(name: name, port: port, maxBackoff: .milliseconds(200)))
            let subscriber = try spawnSubscriber(store, name: name, port: port)
            defer { subscriber.stop() }
            try await cache.set("k", bytes: bytes("v1"))
            try await cache.set("other", bytes: bytes("o1"))
            #expect(text(try cache.cachedValue("k")) == "v1")

            server.stop()
            #expect(text(try await cache.get("k")) == "v1", "a local hit is served while Redis is down")
            await #expect(throws: RedisNearCacheError.self, "a load fails, typed") { _ = try await cache.get("missing") }
            do throws(RedisNearCacheError) {
                _ = try await cache.get("missing")
                Issue.record("a load succeeded while Redis was down")
            } catch {
                #expect(error.code == .redisUnavailable)
            }
            #expect(waitFor(.seconds(10)) { (try? cache.subscriberStatus())?.isConnected == false } != nil, "the subscriber saw the outage")
            #expect(text(try await cache.get("other")) == "o1", "still served, while the status says it may be stale")

            server = try startRedisServer(port: port)
            try redis(port, "SET", "\(name):k", "v2")  // the restarted server lost v1; nobody published v2
            #expect(waitFor(.seconds(10)) { (try? cache.subscriberStatus())?.isConnected == true } != nil, "the subscriber reconnected")
            #expect(try cache.cachedValue("k") == nil, "the reconnection invalidated the near cache")
            #expect(try cache.cachedValue("other") == nil)
            // The command connections reconnect too (after their backoff).
            #expect(await eventually(.seconds(5)) { (try? await cache.get("k")).flatMap { text($0) } == "v2" } != nil)
            #expect(try await cache.get("other") == nil, "Redis lost it: the stale local copy is not served")
            #expect(text(try cache.cachedValue("k")) == "v2")
        }
    }

    @Test("without a connected subscriber, or for a value larger than a record, values are served but not cached")
    func nothingIsCachedWithoutASubscriber() async throws {
        let port = redisPort!
        try await onMachine { store in
            let name = uniqueName("nosub")
            let cache = try RedisNearCache(store: store, configuration: .init(name: name, port: port))
            try redis(port, "SET", "\(name):k", "v", "PX", "60000")
            #expect(text(try await cache.get("k")) == "v")
            #expect(try cache.cachedValue("k") == nil, "no subscriber: invalidations would be missed")

            let subscriber = RedisInvalidationSubscriber(cache: cache)
            let task = Task { try await subscriber.run() }
            #expect(waitFor(.seconds(10)) { subscriber.role == .active(connected: true) } != nil)
            #expect(text(try await cache.get("k")) == "v")
            #expect(text(try cache.cachedValue("k")) == "v")
            let large = [UInt8](repeating: 7, count: store.maxEntryBytes + 1)
            try await cache.set("large", bytes: large, timeToLive: .seconds(60))
            #expect(try await cache.get("large") == large)
            #expect(try cache.cachedValue("large") == nil)
            // The store's reserved entries (NUL-prefixed) are not the cache's keys.
            await #expect(throws: RedisNearCacheError.self) { try await cache.set("\u{0}shmlru-redis/\(name)/state", bytes: [1]) }
            #expect(try cache.subscriberStatus()?.isConnected == true)
            task.cancel()
            #expect(waitFor(.seconds(10)) { subscriber.role == .stopped } != nil)
            #expect(try cache.subscriberStatus() == nil)
        }
    }
}
#endif  // Redis
