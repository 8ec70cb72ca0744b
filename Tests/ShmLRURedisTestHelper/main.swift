#if Redis
import Glibc
import ShmLRU
import ShmLRURedis
import Synchronization

// The other processes of the Redis near-cache tests (spawned by
// Tests/ShmLRURedisTests): a machine's subscriber, and a machine's worker
// process doing one read-through.
//
//   subscriber <store key> <cache name> <port>
//       runs a RedisInvalidationSubscriber and prints "role=<role> pid=<pid>" at
//       every change of its role, until SIGTERM (then stops cleanly) or SIGKILL.
//   get <store key> <cache name> <port> <key>
//       prints "ready", waits until the store holds the key "go", then gets the
//       key through the near cache and prints "value=<utf8>", "value=nil" or
//       "error=<code>".
//   load <store key> <cache name> <port> <key> <ttl ms> <loader ms> <go key>
//       prints "ready", waits until the store holds <go key>, then calls
//       get(_:as:timeToLive:orLoad:) with a loader that sleeps <loader ms> and
//       returns "by-<pid>"; prints "value=<value> ran=<0|1>" (ran: its own
//       loader ran) or "error=<error>".

let terminate = Atomic<Bool>(false)

func fail(_ message: String) -> Never {
    let line = Array("ShmLRURedisTestHelper: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}

func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

func openCache(_ arguments: ArraySlice<String>) -> RedisNearCache {
    guard arguments.count >= 3, let raw = UInt32(arguments[arguments.startIndex]), let port = Int(arguments[arguments.startIndex + 2]) else {
        fail("expected <store key> <cache name> <port>")
    }
    do {
        let store = try ShmStore.attach(key: ShmKey(raw))
        return try RedisNearCache(store: store, configuration: .init(name: arguments[arguments.startIndex + 1], port: port))
    } catch {
        fail("attach: \(error)")
    }
}

/// Stops the subscriber from this process's main thread (not a pool thread).
func stopSubscriber(_ subscriber: RedisInvalidationSubscriber) { subscriber.stop() }

func describe(_ role: RedisInvalidationSubscriber.Role) -> String {
    switch role {
    case .stopped: "stopped"
    case .standby: "standby"
    case .active(let connected): connected ? "connected" : "active"
    }
}

let arguments = CommandLine.arguments.dropFirst()
switch arguments.first {
case "subscriber":
    let cache = openCache(arguments.dropFirst())
    signal(SIGTERM) { _ in terminate.store(true, ordering: .relaxed) }
    var unblock = sigset_t()
    sigemptyset(&unblock)
    sigaddset(&unblock, SIGTERM)
    pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    let subscriber = RedisInvalidationSubscriber(cache: cache, pollInterval: .milliseconds(100))
    do { try subscriber.start() } catch { fail("start: \(error)") }
    var last = ""
    while !terminate.load(ordering: .relaxed) {
        let role = describe(subscriber.role)
        if role != last {
            say("role=\(role) pid=\(getpid())")
            last = role
        }
        usleep(5_000)
    }
    stopSubscriber(subscriber)
    say("role=stopped pid=\(getpid())")

case "get":
    let cache = openCache(arguments.dropFirst())
    let rest = arguments.dropFirst(4)
    guard let key = rest.first else { fail("get: expected a key") }
    say("ready")
    let deadline = clock_gettime_ns() + 30_000_000_000
    while (try? cache.store.contains("go")) != true {
        if clock_gettime_ns() > deadline { fail("no go within 30 s") }
        usleep(500)
    }
    do {
        if let value = try await cache.get(key) { say("value=\(String(decoding: value, as: UTF8.self))") } else { say("value=nil") }
    } catch {
        say("error=\(error.code)")
    }

case "load":
    let cache = openCache(arguments.dropFirst())
    let rest = Array(arguments.dropFirst(4))
    guard rest.count == 4, let ttl = Int64(rest[1]), let loaderMs = Int64(rest[2]) else { fail("load: expected <key> <ttl ms> <loader ms> <go key>") }
    let key = rest[0]
    let goKey = rest[3]
    say("ready")
    let deadline = clock_gettime_ns() + 30_000_000_000
    while (try? cache.store.contains(goKey)) != true {
        if clock_gettime_ns() > deadline { fail("no go within 30 s") }
        usleep(500)
    }
    let ran = Atomic<Int>(0)
    let pid = getpid()
    do {
        let value = try await cache.get(key, as: String.self, timeToLive: .milliseconds(ttl)) {
            ran.add(1, ordering: .relaxed)
            try await Task.sleep(for: .milliseconds(loaderMs))
            return "by-\(pid)"
        }
        say("value=\(value ?? "nil") ran=\(ran.load(ordering: .relaxed))")
    } catch {
        say("error=\(error)")
    }

default:
    fail("unknown command \(arguments.first ?? "(none)")")
}

func clock_gettime_ns() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
#else
import Glibc
let message = "ShmLRURedisTestHelper: built without the Redis trait (swift build --traits Redis)\n"
_ = message.withCString { write(2, $0, strlen($0)) }
exit(2)
#endif  // Redis
