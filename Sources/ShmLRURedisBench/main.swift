#if Redis
import CHiredis
import Glibc
import ShmLRU
import ShmLRURedis

// `make bench-redis`: a near-cache hit (RedisNearCache.get served by the
// machine's ShmStore) against a Redis GET round trip on loopback (hiredis,
// blocking, one connection), measured in the same run against the same server;
// then a read-through miss (load lock, GET + PTTL, local store). Release build.
// The redis-server comes from .ci/with-redis (SHMLRU_REDIS_PORT), or --port.
//
//   ShmLRURedisBench [--port P] [--quick]

func monotonic() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func fail(_ message: String) -> Never {
    let line = Array("ShmLRURedisBench: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(1)
}

/// The median over `rounds` of the mean ns per operation of `operations` calls.
func measure(rounds: Int, operations: Int, _ body: () -> Void) -> Double {
    var means: [Double] = []
    for _ in 0..<rounds {
        let start = monotonic()
        for _ in 0..<operations { body() }
        means.append(Double(monotonic() - start) / Double(operations))
    }
    return means.sorted()[rounds / 2]
}

var arguments = CommandLine.arguments.dropFirst()
var port = getenv("SHMLRU_REDIS_PORT").flatMap { Int(String(cString: $0)) }
var quick = false
while let argument = arguments.popFirst() {
    switch argument {
    case "--port": port = arguments.popFirst().flatMap { Int($0) }
    case "--quick": quick = true
    default: fail("unknown argument \(argument); usage: ShmLRURedisBench [--port P] [--quick]")
    }
}
guard let port else { fail("no Redis port: run it through `make bench-redis`, or pass --port") }

let rounds = quick ? 3 : 7
let hitOperations = quick ? 50_000 : 200_000
let getOperations = quick ? 5_000 : 20_000
let missOperations = quick ? 2_000 : 5_000

var key: ShmKey
repeat { key = ShmKey(UInt32.random(in: 0x7000_0000...0x7FFF_FFFF)) } while ShmRegion.exists(key: key)
let store: ShmStore
do { store = try ShmStore.create(key: key, configuration: .init(capacity: 10_000, recordSize: 256)) } catch { fail("store: \(error)") }
defer {
    try? store.remove()
    try? store.detach()
}
let name = "bench-\(UInt32.random(in: 0...UInt32.max))"
let cache = RedisNearCache(store: store, configuration: .init(name: name, port: port))
let subscriber = RedisInvalidationSubscriber(cache: cache)
do { try subscriber.start() } catch { fail("subscriber: \(error)") }
let subscribed = monotonic() + 10_000_000_000
while subscriber.role != .active(connected: true) {
    if monotonic() > subscribed { fail("the subscriber did not connect to 127.0.0.1:\(port)") }
    usleep(1_000)
}

let value = [UInt8](repeating: 0x61, count: 100)
do { try cache.set("k", bytes: value, timeToLive: .seconds(600)) } catch { fail("set: \(error)") }

guard let context = redisConnectWithTimeout("127.0.0.1", Int32(port), chiredis_timeval(1000)), chiredis_error(context) == 0 else {
    fail("cannot connect to 127.0.0.1:\(port)")
}
let redisKey = Array("\(name):k".utf8)
let localKey = "k"
var sink = 0

// Rounds alternate between the three measures, so that all of them see the same
// machine load; each figure is the median over the rounds.
var hits: [Double] = []
var storeReads: [Double] = []
var gets: [Double] = []
for _ in 0..<rounds {
    // 1. Near-cache hit.
    hits.append(measure(rounds: 1, operations: hitOperations) { sink &+= (try? cache.get("k"))??.count ?? 0 })
    // The store's own read of the same entry (what the near cache adds is the difference).
    storeReads.append(measure(rounds: 1, operations: hitOperations) { sink &+= (try? store.bytes(localKey))??.count ?? 0 })
    // 2. Redis GET round trip: hiredis, blocking, one connection (what a loader pays at least).
    gets.append(
        measure(rounds: 1, operations: getOperations) {
            let reply = redisKey.withUnsafeBufferPointer { keyBytes -> UnsafeMutableRawPointer? in
                "GET".withCString { get in
                    var argv: [UnsafePointer<CChar>?] = [get, UnsafeRawPointer(keyBytes.baseAddress!).assumingMemoryBound(to: CChar.self)]
                    var lengths = [3, keyBytes.count]
                    return redisCommandArgv(context, 2, &argv, &lengths)
                }
            }
            guard let reply else { fail("GET failed") }
            sink &+= reply.assumingMemoryBound(to: redisReply.self).pointee.len
            freeReplyObject(reply)
        })
}
redisFree(context)
let hit = hits.sorted()[rounds / 2]
let storeRead = storeReads.sorted()[rounds / 2]
let getRoundTrip = gets.sorted()[rounds / 2]

// 3. Read-through miss: the local copy removed, then a get (load lock, GET + PTTL, store).
let miss = measure(rounds: rounds, operations: missOperations) {
    _ = try? store.remove(localKey)
    sink &+= (try? cache.get("k"))??.count ?? 0
}

subscriber.stop()
_ = try? cache.remove("k")

func format(_ ns: Double) -> String {
    ns >= 10_000 ? "\(Int(ns / 1000)) µs" : ns >= 1000 ? "\(Int(ns / 100) / 10).\(Int(ns / 100) % 10) µs" : "\(Int(ns)) ns"
}
print("Redis near cache (redis-server on 127.0.0.1:\(port), 100-byte value, median of \(rounds) rounds)")
print("  near-cache hit (RedisNearCache.get, local)   \(format(hit))/op")
print("    of which the store's read (ShmStore.bytes)  \(format(storeRead))/op")
print("  Redis GET round trip (hiredis, loopback)     \(format(getRoundTrip))/op")
print("  read-through miss (lock, GET + PTTL, store)  \(format(miss))/op")
let ratio = getRoundTrip / hit
print("  hit vs GET: \(Int(ratio))× faster (target ≥ 100×: \(ratio >= 100 ? "met" : "NOT met"))")
if sink == 42 { print("") }  // keeps the loops' results alive
#else
import Glibc
let message = "ShmLRURedisBench: built without the Redis trait (swift build --traits Redis)\n"
_ = message.withCString { write(2, $0, strlen($0)) }
exit(2)
#endif  // Redis
