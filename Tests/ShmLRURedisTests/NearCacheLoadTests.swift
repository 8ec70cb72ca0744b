#if Redis
import Glibc
import ShmLRU
import Synchronization
import Testing

@testable import ShmLRURedis

// The three-level get-or-load (store, Redis, loader), Codable values, negative
// caching, stale-if-error and refresh ahead, against a real redis-server; the
// cross-machine test with 8 real processes on 2 simulated machines.

struct User: Codable, Sendable, Hashable {
    var id: Int
    var name: String
}

/// Runs an in-process subscriber for `cache` while `body` runs.
func withSubscriber<R>(_ cache: RedisNearCache, _ body: () async throws -> R) async throws -> R {
    let subscriber = RedisInvalidationSubscriber(cache: cache)
    let running = Task { try await subscriber.run() }
    defer { running.cancel() }
    guard await eventually(.seconds(10), { subscriber.role == .active(connected: true) }) != nil else {
        running.cancel()
        _ = await running.result
        throw ShmError(.lockTimeout, "the subscriber did not connect")
    }
    do {
        let result = try await body()
        running.cancel()
        _ = await running.result
        return result
    } catch {
        running.cancel()
        _ = await running.result
        throw error
    }
}

@Suite("Redis near cache: get-or-load", .serialized, .enabled(if: hasRedis, noRedisMessage))
struct RedisNearCacheLoadTests {
    @Test("Codable values: set and get through the store's codec, repeated reads from the decoded cache")
    func codableValuesRoundTrip() async throws {
        let port = redisPort!
        try await onMachine { store in
            let cache = try RedisNearCache(store: store, configuration: .init(name: uniqueName("codable"), port: port))
            try await withSubscriber(cache) {
                let tom = User(id: 42, name: "Tom")
                try await cache.set("42", tom, timeToLive: .seconds(60))
                let hitsBefore = store.decodedCacheStats.hits
                #expect(try await cache.get("42", as: User.self) == tom)
                #expect(try await cache.get("42", as: User.self) == tom)
                #expect(store.decodedCacheStats.hits > hitsBefore, "repeated reads come from the decoded cache")
                // Loaded from Redis when the machine's copy is gone.
                _ = try store.remove("42")
                #expect(try await cache.get("42", as: User.self) == tom)
                #expect(try await cache.get("absent", as: User.self) == nil)
                // Bytes that are not a User: typed.
                try await cache.set("junk", bytes: Array("not json".utf8))
                do throws(RedisNearCacheError) {
                    _ = try await cache.get("junk", as: User.self)
                    Issue.record("junk decoded")
                } catch {
                    #expect(error.code == .store)
                }
            }
        }
    }

    @Test("get(_:as:orLoad:) from 8 processes on 2 machines runs the loader once in total, and again only after expiry")
    func getOrLoadFromEightProcessesOnTwoMachinesRunsTheLoaderOnce() async throws {
        let port = redisPort!
        try await onMachine { storeA in
            try await onMachine { storeB in
                let name = uniqueName("eight")
                let subscriberA = try spawnSubscriber(storeA, name: name, port: port)
                defer { subscriberA.stop() }
                let subscriberB = try spawnSubscriber(storeB, name: name, port: port)
                defer { subscriberB.stop() }
                let ttl = 4000

                /// 4 processes per machine call get(orLoad:) at once; returns their loader runs and values.
                func round(_ go: String) throws -> (runs: Int, values: Set<String>) {
                    var workers: [Child] = []
                    for store in [storeA, storeB] {
                        for _ in 0..<4 {
                            workers.append(try spawnHelper(["load", String(store.key.unsignedValue), name, String(port), "k", String(ttl), "300", go]))
                        }
                    }
                    for worker in workers { #expect(worker.waitForLine("ready") != nil) }
                    try storeA.set(go, bytes: [1])
                    try storeB.set(go, bytes: [1])
                    var runs = 0
                    var values: Set<String> = []
                    for worker in workers {
                        guard let line = worker.waitForLine("value=", timeout: .seconds(30)) else {
                            Issue.record("a worker did not answer")
                            continue
                        }
                        // "value=by-123 ran=1"
                        let parts = line.split(separator: " ")
                        values.insert(String(parts[0].dropFirst("value=".count)))
                        if parts.count > 1, parts[1] == "ran=1" { runs += 1 }
                    }
                    return (runs, values)
                }

                let first = try round("go1")
                #expect(first.runs == 1, "the loader ran \(first.runs) times for 8 processes on 2 machines")
                #expect(first.values.count == 1 && first.values.first?.hasPrefix("by-") == true, "all 8 saw the one loaded value: \(first.values)")

                let second = try round("go2")
                #expect(second.runs == 0, "before expiry: no load (\(second.runs))")
                #expect(second.values == first.values)

                // After the value expired (Redis and the machines' copies), one load again.
                #expect(waitFor(.seconds(10)) { (try? redis(port, "EXISTS", "\(name):k")) == .integer(0) } != nil)
                #expect(waitFor(.seconds(10)) { (try? storeA.timeToLive("k")) == .some(nil) && (try? storeB.timeToLive("k")) == .some(nil) } != nil)
                let third = try round("go3")
                #expect(third.runs == 1, "after expiry: one load in total (\(third.runs))")
                #expect(third.values.count == 1 && third.values != first.values)
            }
        }
    }

    @Test("negative caching: a loader's nil is remembered for the store's negativeTTL, and another machine's write ends it")
    func aMissIsRememberedForTheNegativeTTL() async throws {
        let port = redisPort!
        try await onMachine(negativeTTL: .seconds(1)) { store in
            try await onMachine { storeA in
                let name = uniqueName("negative")
                let cache = try RedisNearCache(store: store, configuration: .init(name: name, port: port))
                let a = try RedisNearCache(store: storeA, configuration: .init(name: name, port: port))
                try await withSubscriber(cache) {
                    let runs = Atomic<Int>(0)
                    let load: @Sendable () async throws -> String? = {
                        runs.add(1, ordering: .relaxed)
                        return nil
                    }
                    #expect(try await cache.get("n", as: String.self, timeToLive: .seconds(10), orLoad: load) == nil)
                    #expect(try await cache.get("n", as: String.self, timeToLive: .seconds(10), orLoad: load) == nil)
                    #expect(runs.load(ordering: .relaxed) == 1, "the miss was remembered")
                    try await Task.sleep(for: .milliseconds(1200))
                    #expect(try await cache.get("n", as: String.self, timeToLive: .seconds(10), orLoad: load) == nil)
                    #expect(runs.load(ordering: .relaxed) == 2, "remembered for negativeTTL only")

                    // Remembered again; then machine A writes the key: the remembered miss goes.
                    try await a.set("n", "there", timeToLive: .seconds(10))
                    let seen = try await eventually(.seconds(2)) {
                        try await cache.get("n", as: String.self, timeToLive: .seconds(10), orLoad: load) == "there"
                    }
                    #expect(seen != nil, "another machine's write did not end the remembered miss")
                    #expect(runs.load(ordering: .relaxed) == 2)
                }
            }
        }
    }

    @Test("stale-if-error: the last value is served when the loader fails, and when Redis is down")
    func staleIfErrorServesTheLastValue() async throws {
        let port = freePort()
        let server = try startRedisServer(port: port)
        defer { server.kill() }
        try await onMachine(staleIfError: .seconds(60)) { store in
            let cache = try RedisNearCache(store: store, configuration: .init(name: uniqueName("stale"), port: port))
            try await withSubscriber(cache) {
                struct Down: Error {}
                #expect(try await cache.get("s", as: String.self, timeToLive: .milliseconds(500)) { "v1" } == "v1")
                #expect(await eventually(.seconds(5)) { (try? store.timeToLive("s")) == .some(nil) } != nil, "the local copy expired")
                #expect(await eventually(.seconds(5)) { (try? redis(port, "EXISTS", "\(cache.configuration.name):s")) == .integer(0) } != nil)

                // The loader fails: the expired value is served.
                #expect(try await cache.get("s", as: String.self, timeToLive: .milliseconds(500)) { throw Down() } == "v1")
                // Without a stale value the loader's error is thrown.
                await #expect(throws: Down.self) { _ = try await cache.get("none", as: String.self) { throw Down() } }

                // Redis down: the expired value is served; a key without one fails, typed.
                server.stop()
                #expect(try await cache.get("s", as: String.self, timeToLive: .milliseconds(500)) { "v2" } == "v1")
                do {
                    _ = try await cache.get("other", as: String.self) { "x" }
                    Issue.record("a load succeeded with Redis down")
                } catch let error as RedisNearCacheError {
                    #expect(error.code == .redisUnavailable)
                }
            }
        }
    }

    @Test("refresh ahead: a value read near its expiry is reloaded once in the background while the old one is served")
    func refreshAheadReloadsOnceInTheBackground() async throws {
        let port = redisPort!
        try await onMachine { store in
            let cache = try RedisNearCache(
                store: store, configuration: .init(name: uniqueName("ahead"), port: port, refreshAhead: .milliseconds(1500)))
            try await withSubscriber(cache) {
                let runs = Atomic<Int>(0)
                let load: @Sendable () async throws -> String? = { "v\(runs.add(1, ordering: .relaxed).newValue)" }
                let ttl = Duration.seconds(3)
                #expect(try await cache.get("r", as: String.self, timeToLive: ttl, orLoad: load) == "v1")
                #expect(try await cache.get("r", as: String.self, timeToLive: ttl, orLoad: load) == "v1")
                #expect(runs.load(ordering: .relaxed) == 1, "far from expiry: no refresh")
                let due = await eventually(.seconds(5)) {
                    guard case .remaining(let left)? = try? store.timeToLive("r") else { return false }
                    return left < .milliseconds(1400)
                }
                #expect(due != nil)
                // Near expiry: the old value is served, and one reload starts.
                #expect(try await cache.get("r", as: String.self, timeToLive: ttl, orLoad: load) == "v1")
                #expect(await eventually(.seconds(5)) { (try? store.get("r", as: String.self)) == "v2" } != nil, "refreshed in the background")
                for _ in 0..<20 { #expect(try await cache.get("r", as: String.self, timeToLive: ttl, orLoad: load) == "v2") }
                #expect(runs.load(ordering: .relaxed) == 2, "one reload (\(runs.load(ordering: .relaxed)))")
                guard case .remaining(let left)? = try store.timeToLive("r") else {
                    Issue.record("the refreshed copy has no time to live")
                    return
                }
                #expect(left > .milliseconds(1500), "the refreshed copy has a new life")
            }
        }
    }
}
#endif  // Redis
