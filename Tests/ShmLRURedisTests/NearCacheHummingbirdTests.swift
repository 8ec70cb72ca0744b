#if Redis && Hummingbird
import Glibc
import Hummingbird
import HummingbirdTesting
import NIOCore
import ShmLRU
import Synchronization
import Testing

@testable import ShmLRURedis

// The near cache as a Swift server uses it: Hummingbird handlers call the async
// near cache while redis-server is SIGSTOPped (accepts, answers nothing) for
// 2 s. Local hits must keep being answered, and a route that does not touch
// the cache must complete while Redis is still stopped: no thread of Swift's
// cooperative pool (2 threads here) is held by a Redis wait, even with misses
// waiting on the stopped server at the same time.

/// A counter shared by concurrent tasks.
final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

@Suite("Redis near cache in a Hummingbird handler", .serialized, .enabled(if: hasRedis, noRedisMessage))
struct RedisNearCacheHummingbirdTests {
    @Test("200 concurrent requests while Redis is SIGSTOPped for 2 s: hits answered, another route completes meanwhile")
    func handlersKeepAnsweringWhileRedisIsStopped() async throws {
        let port = freePort()
        let server = try startRedisServer(port: port)
        defer {
            server.send(SIGCONT)
            server.kill()
        }
        try await onMachine { store in
            let cache = try RedisNearCache(store: store, configuration: .init(name: uniqueName("hb"), port: port))
            try await withSubscriber(cache) {
                for i in 0..<20 { try await cache.set("hit\(i)", "value \(i)", timeToLive: .seconds(120)) }
                let router = Router()
                router.get("/hit/:key") { _, context -> String in
                    let key = try context.parameters.require("key")
                    return try await cache.get(key, as: String.self) ?? "missing"
                }
                router.get("/miss/:key") { _, context -> String in
                    let key = try context.parameters.require("key")
                    do throws(RedisNearCacheError) { return try await cache.get(key, as: String.self) ?? "missing" } catch {
                        return "error \(error.code)"
                    }
                }
                router.get("/ping") { _, _ -> String in "pong" }
                let app = Application(router: router)
                let redisPID = server.pid

                try await app.test(.router) { client in
                    kill(redisPID, SIGSTOP)
                    let stoppedAt = monotonicNanoseconds()
                    var rounds = 0
                    var hitsAnswered = 0
                    var hitsWhileStopped = 0
                    var pingsWhileStopped = 0
                    var missAnswers: [String: Int] = [:]
                    // Round 1: its misses wait one command timeout on the stopped server
                    // (then the breaker opens): what completed before any of them did
                    // ran while they waited, on the pool's threads.
                    var pingBeforeAnyMiss = false
                    var hitsBeforeAnyMiss = 0
                    // Rounds of 200 concurrent requests (180 hits, 20 misses on new keys) until 2 s passed.
                    while monotonicNanoseconds() - stoppedAt < 2_000_000_000 {
                        rounds += 1
                        let round = rounds
                        let missesAnswered = Counter()
                        let results = try await withThrowingTaskGroup(of: (kind: String, body: String, missesAnswered: Int).self) { group in
                            for i in 0..<200 {
                                group.addTask {
                                    let miss = i % 10 == 0
                                    let uri = miss ? "/miss/m\(round)-\(i)" : "/hit/hit\(i % 20)"
                                    let body = try await client.execute(uri: uri, method: .get) { response in
                                        String(buffer: response.body)
                                    }
                                    if miss { missesAnswered.value.add(1, ordering: .relaxed) }
                                    return (miss ? "miss\(i % 20)" : "hit\(i % 20)", body, missesAnswered.value.load(ordering: .relaxed))
                                }
                            }
                            // Another route, while the misses wait on the stopped server.
                            group.addTask {
                                let body = try await client.execute(uri: "/ping", method: .get) { String(buffer: $0.body) }
                                return ("ping", body, missesAnswered.value.load(ordering: .relaxed))
                            }
                            var all: [(kind: String, body: String, missesAnswered: Int)] = []
                            for try await result in group { all.append(result) }
                            return all
                        }
                        for result in results {
                            if result.kind == "ping" {
                                #expect(result.body == "pong")
                                pingsWhileStopped += 1
                                if round == 1 { pingBeforeAnyMiss = result.missesAnswered == 0 }
                            } else if result.kind.hasPrefix("hit") {
                                let index = Int(result.kind.dropFirst(3))!
                                #expect(result.body == "value \(index)", "a hit answered \(result.body)")
                                hitsAnswered += 1
                                hitsWhileStopped += 1
                                if round == 1, result.missesAnswered == 0 { hitsBeforeAnyMiss += 1 }
                            } else {
                                missAnswers[result.body, default: 0] += 1
                            }
                        }
                    }
                    kill(redisPID, SIGCONT)
                    print("Hummingbird, Redis stopped 2 s: \(rounds) rounds of 200 requests, \(hitsWhileStopped) hits and \(pingsWhileStopped) pings answered while stopped (round 1: \(hitsBeforeAnyMiss) hits and \(pingBeforeAnyMiss ? "the" : "no") ping before any miss answered); misses: \(missAnswers)")
                    #expect(pingBeforeAnyMiss, "the other route waited for the misses' Redis waits")
                    #expect(hitsBeforeAnyMiss == 180, "hits waited for the misses' Redis waits (\(hitsBeforeAnyMiss) of 180 before)")
                    #expect(rounds >= 1)
                    #expect(hitsWhileStopped == rounds * 180, "every hit was answered while Redis was stopped (before SIGCONT)")
                    #expect(pingsWhileStopped == rounds, "the other route completed while Redis was still stopped")
                    #expect(missAnswers.keys.allSatisfy { $0 == "error redisUnavailable" }, "misses fail typed while Redis is stopped")

                    // Redis back: misses load again (after the breaker's probe), hits still right.
                    let back = try await eventually(.seconds(10)) {
                        try await client.execute(uri: "/miss/after", method: .get) { String(buffer: $0.body) } == "missing"
                    }
                    #expect(back != nil, "the near cache recovered after SIGCONT")
                    let hit = try await client.execute(uri: "/hit/hit3", method: .get) { String(buffer: $0.body) }
                    #expect(hit == "value 3")
                }
            }
        }
    }
}
#endif  // Redis && Hummingbird
