#if Redis
import CHiredis
import Glibc
import ShmLRU
import ShmLRURedis
import Synchronization

// `make bench-redis`: the near cache against a real redis-server (release build).
//
// 1. A near-cache hit (RedisNearCache.get served by the machine's ShmStore)
//    against a Redis GET round trip on loopback (hiredis, blocking, one
//    connection), in the same run against the same server; and a byte miss.
// 2. Invalidation latency between two machines' stores (two ShmStores, each
//    with its own subscriber): from the call of machine A's write (so its round
//    trip to Redis included) to the moment machine B's store no longer holds
//    its old copy, seen by a thread spinning on it; p50 / p99 / max.
// 3. get(_:as:timeToLive:orLoad:) with a slow loader (100 ms) from 8 processes
//    on 2 machines (this program, spawned 8 times as "load-worker"), all
//    missing the same key at once: loader runs counted, and the time until the
//    last process had its value.
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

func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

func format(_ ns: Double) -> String {
    ns >= 10_000 ? "\(Int(ns / 1000)) µs" : ns >= 1000 ? "\(Int(ns / 100) / 10).\(Int(ns / 100) % 10) µs" : "\(Int(ns)) ns"
}

func percentile(_ sorted: [UInt64], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    return Double(sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)])
}

func newStore() -> ShmStore {
    var key: ShmKey
    repeat { key = ShmKey(UInt32.random(in: 0x7000_0000...0x7FFF_FFFF)) } while ShmRegion.exists(key: key)
    do { return try ShmStore.create(key: key, configuration: .init(capacity: 10_000, recordSize: 256)) } catch { fail("store: \(error)") }
}

func startSubscriber(_ cache: RedisNearCache, port: Int) -> RedisInvalidationSubscriber {
    let subscriber = RedisInvalidationSubscriber(cache: cache)
    do { try subscriber.start() } catch { fail("subscriber: \(error)") }
    let subscribed = monotonic() + 10_000_000_000
    while subscriber.role != .active(connected: true) {
        if monotonic() > subscribed { fail("the subscriber did not connect to 127.0.0.1:\(port)") }
        usleep(1_000)
    }
    return subscriber
}

/// Stops a subscriber from the main thread (not a pool thread).
func stopSubscriber(_ subscriber: RedisInvalidationSubscriber) { subscriber.stop() }

var arguments = CommandLine.arguments.dropFirst()

// The 8 processes of part 3: load-worker <store key> <name> <port> <key> <go key>
if arguments.first == "load-worker" {
    let a = Array(arguments.dropFirst())
    guard a.count == 5, let raw = UInt32(a[0]), let port = Int(a[2]) else { fail("load-worker: bad arguments") }
    let store: ShmStore
    let cache: RedisNearCache
    do {
        store = try ShmStore.attach(key: ShmKey(raw))
        cache = try RedisNearCache(store: store, configuration: .init(name: a[1], port: port))
    } catch { fail("load-worker: \(error)") }
    say("ready")
    while (try? store.contains(a[4])) != true { usleep(200) }
    let ran = Atomic<Int>(0)
    do {
        let value = try await cache.get(a[3], as: String.self, timeToLive: .seconds(60)) {
            ran.add(1, ordering: .relaxed)
            try await Task.sleep(for: .milliseconds(100))
            return "loaded"
        }
        say("done ran=\(ran.load(ordering: .relaxed)) at=\(monotonic()) value=\(value ?? "nil")")
    } catch {
        say("error \(error)")
    }
    exit(0)
}

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
let hitOperations = quick ? 20_000 : 200_000
let getOperations = quick ? 2_000 : 20_000
let missOperations = quick ? 500 : 5_000
let invalidations = quick ? 50 : 1_000
let loadRounds = quick ? 2 : 10

let store = newStore()
let storeB = newStore()
defer {
    for s in [store, storeB] {
        try? s.remove()
        try? s.detach()
    }
}
let name = "bench-\(UInt32.random(in: 0...UInt32.max))"
let cache: RedisNearCache
let cacheB: RedisNearCache
do {
    cache = try RedisNearCache(store: store, configuration: .init(name: name, port: port))
    cacheB = try RedisNearCache(store: storeB, configuration: .init(name: name, port: port))
} catch { fail("\(error)") }
let subscriber = startSubscriber(cache, port: port)
let subscriberB = startSubscriber(cacheB, port: port)

// MARK: 1. Hit vs GET

let value = [UInt8](repeating: 0x61, count: 100)
do { try await cache.set("k", bytes: value, timeToLive: .seconds(600)) } catch { fail("set: \(error)") }
guard let context = redisConnectWithTimeout("127.0.0.1", Int32(port), chiredis_timeval(1000)), chiredis_error(context) == 0 else {
    fail("cannot connect to 127.0.0.1:\(port)")
}
let redisKey = Array("\(name):k".utf8)
let localKey = "k"
var sink = 0

/// The mean ns per operation of `operations` calls.
func measure(_ operations: Int, _ body: () async -> Void) async -> Double {
    let start = monotonic()
    for _ in 0..<operations { await body() }
    return Double(monotonic() - start) / Double(operations)
}

// Rounds alternate between the measures, so that all see the same machine load;
// each figure is the median over the rounds.
var hits: [Double] = []
var storeReads: [Double] = []
var gets: [Double] = []
for _ in 0..<rounds {
    hits.append(await measure(hitOperations) { sink &+= (try? await cache.get("k"))??.count ?? 0 })
    storeReads.append(await measure(hitOperations) { sink &+= (try? store.bytes(localKey))??.count ?? 0 })
    gets.append(
        await measure(getOperations) {
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
var misses: [Double] = []
for _ in 0..<rounds {
    misses.append(
        await measure(missOperations) {
            _ = try? store.remove(localKey)
            sink &+= (try? await cache.get("k"))??.count ?? 0
        })
}
let miss = misses.sorted()[rounds / 2]

// MARK: 2. Invalidation latency A → B

/// Watches machine B's copy on a thread of its own (the removal may come
/// before A's `set` returns: the message and the EXEC reply leave Redis together).
final class Watch: Sendable {
    let ready = Atomic<Bool>(false)
    let goneAt = Atomic<UInt64>(0)
}

var latencies: [UInt64] = []
var lost = 0
do { try await cache.set("inv", bytes: Array("v-1".utf8), timeToLive: .seconds(600)) } catch { fail("set: \(error)") }
for i in 0..<invalidations {
    // B holds a copy (loaded through B's near cache); A writes; B's subscriber removes it.
    var held: [UInt8]? = nil
    for _ in 0..<100 {
        _ = try? await cacheB.get("inv")
        held = (try? storeB.bytes("inv")) ?? nil
        if held != nil { break }
        usleep(200)
    }
    guard let old = held else { fail("machine B does not cache (is its subscriber connected?)") }
    let watch = Watch()
    guard let thread = _startThread({
        watch.ready.store(true, ordering: .releasing)
        let deadline = monotonic() + 2_000_000_000
        while (try? storeB.bytes("inv")) == .some(old) {
            if monotonic() > deadline { return }
        }
        watch.goneAt.store(monotonic(), ordering: .releasing)
    }) else { fail("pthread_create") }
    while !watch.ready.load(ordering: .acquiring) {}
    let start = monotonic()  // A's write starts: the latency includes its round trip to Redis
    do { try await cache.set("inv", bytes: Array("v\(i)".utf8), timeToLive: .seconds(600)) } catch { fail("set: \(error)") }
    pthread_join(thread, nil)
    let gone = watch.goneAt.load(ordering: .acquiring)
    if gone != 0 { latencies.append(gone &- start) } else { lost += 1 }
}
latencies.sort()

// MARK: 3. get-or-load, slow loader, 8 processes on 2 machines

stopSubscriber(subscriber)
stopSubscriber(subscriberB)
_ = try? await cache.remove("k")
_ = try? await cache.remove("inv")

var executable = [CChar](repeating: 0, count: 4096)
let length = readlink("/proc/self/exe", &executable, executable.count - 1)
guard length > 0 else { fail("readlink /proc/self/exe") }
let selfPath = String(decoding: executable[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)

/// A child process whose stdout is a pipe.
struct Worker {
    var pid: pid_t
    var fd: Int32
    var buffer: [UInt8] = []

    mutating func line(timeout: UInt64 = 30_000_000_000) -> String? {
        let deadline = monotonic() + timeout
        while monotonic() < deadline {
            if let newline = buffer.firstIndex(of: 10) {
                let text = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return text
            }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 1024)
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return nil }
            buffer += chunk[0..<n]
        }
        return nil
    }
}

func spawnWorker(_ arguments: [String]) -> Worker {
    var out: [Int32] = [0, 0]
    guard pipe(&out) == 0 else { fail("pipe") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, out[1], 1)
    posix_spawn_file_actions_addclose(&actions, out[0])
    let argv = ([selfPath] + arguments).map { strdup($0) } + [nil]
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, selfPath, &actions, nil, argv, environ)
    argv.forEach { free($0) }
    posix_spawn_file_actions_destroy(&actions)
    close(out[1])
    guard rc == 0 else { fail("posix_spawn: \(rc)") }
    return Worker(pid: pid, fd: out[0])
}

var loaderRuns: [Int] = []
var spans: [UInt64] = []
for r in 0..<loadRounds {
    let key = "slow\(r)"
    let go = "go\(r)"
    var workers: [Worker] = []
    for s in [store, storeB] {
        for _ in 0..<4 { workers.append(spawnWorker(["load-worker", String(s.key.unsignedValue), name, String(port), key, go])) }
    }
    for i in workers.indices { guard workers[i].line() == "ready" else { fail("a load worker did not start") } }
    let start = monotonic()
    _ = try? store.set(go, bytes: [1])
    _ = try? storeB.set(go, bytes: [1])
    var runs = 0
    var last: UInt64 = start
    for i in workers.indices {
        guard let line = workers[i].line(), line.hasPrefix("done") else { fail("a load worker failed") }
        let fields = line.split(separator: " ")
        if fields.contains("ran=1") { runs += 1 }
        if let at = fields.first(where: { $0.hasPrefix("at=") }).flatMap({ UInt64($0.dropFirst(3)) }) { last = max(last, at) }
        close(workers[i].fd)
        var status: Int32 = 0
        waitpid(workers[i].pid, &status, 0)
    }
    loaderRuns.append(runs)
    spans.append(last - start)
    _ = try? await cache.remove(key)
}
spans.sort()

print("Redis near cache (redis-server on 127.0.0.1:\(port), 100-byte value, median of \(rounds) rounds)")
print("  near-cache hit (RedisNearCache.get, local)   \(format(hit))/op")
print("    of which the store's read (ShmStore.bytes)  \(format(storeRead))/op")
print("  Redis GET round trip (hiredis, loopback)     \(format(getRoundTrip))/op")
print("  read-through miss (lock, GET + PTTL, store)  \(format(miss))/op")
print("  hit vs GET: \(Int(getRoundTrip / hit))× faster")
print("Invalidation latency, machine A's write called → machine B's copy gone (\(latencies.count) writes, \(lost) not seen within 2 s)")
print("  p50 \(format(percentile(latencies, 0.5)))   p99 \(format(percentile(latencies, 0.99)))   max \(format(Double(latencies.last ?? 0)))")
print("get-or-load, 100 ms loader, 8 processes on 2 machines missing one key at once (\(loadRounds) rounds)")
print("  loader runs per key: \(loaderRuns.map(String.init).joined(separator: " ")) (expected 1 each)")
print("  until the last process had its value: p50 \(format(percentile(spans, 0.5)))   max \(format(Double(spans.last ?? 0)))")
if sink == 42 { print("") }  // keeps the loops' results alive
#else
import Glibc
let message = "ShmLRURedisBench: built without the Redis trait (swift build --traits Redis)\n"
_ = message.withCString { write(2, $0, strlen($0)) }
exit(2)
#endif  // Redis
