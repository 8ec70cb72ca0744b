#if Redis
import Glibc
import ShmLRU
import Testing

@testable import ShmLRURedis

// What the Redis near-cache tests share: the redis-server `make test` started
// (its port in SHMLRU_REDIS_PORT, see .ci/with-redis), helper processes, a raw
// Redis connection to look behind the near cache's back, and servers of their own.

/// The port of the redis-server started for the tests; nil: none (the tests are skipped).
let redisPort: Int? = getenv("SHMLRU_REDIS_PORT").flatMap { Int(String(cString: $0)) }

/// The condition every Redis test is enabled by.
let hasRedis = redisPort != nil
let noRedisMessage: Comment = "no redis-server: SHMLRU_REDIS_PORT is unset (make test and .ci/with-redis start one)"

/// A cache name no other test (or earlier run) uses.
func uniqueName(_ label: String) -> String { "test-\(label)-\(UInt32.random(in: 0...UInt32.max))" }

/// A key no other test uses: random, and checked free.
func uniqueKey() -> ShmKey {
    while true {
        let key = ShmKey(UInt32.random(in: 0x6000_0000...0x6FFF_FFFF))
        if !ShmRegion.exists(key: key) { return key }
    }
}

/// Creates a store (a "machine"), runs `body`, removes the store even when `body` throws.
func withMachine<R>(_ body: (ShmStore) throws -> R) throws -> R {
    let store = try ShmStore.create(key: uniqueKey(), configuration: .init(capacity: 1000, recordSize: 256))
    defer {
        try? store.remove()
        try? store.detach()
    }
    return try body(store)
}

/// `withMachine` for async bodies.
func onMachine<R>(capacity: Int = 1000, negativeTTL: Duration? = nil, staleIfError: Duration? = nil, _ body: (ShmStore) async throws -> R) async throws -> R {
    let store = try ShmStore.create(
        key: uniqueKey(), configuration: .init(capacity: capacity, recordSize: 256, negativeTTL: negativeTTL, staleIfError: staleIfError))
    defer {
        try? store.remove()
        try? store.detach()
    }
    return try await body(store)
}

/// Polls `condition` every millisecond (async) until it holds or `deadline`
/// passes; returns the time it took (nil: it never held).
func eventually(_ deadline: Duration, _ condition: () async throws -> Bool) async rethrows -> Duration? {
    let start = monotonicNanoseconds()
    let limit = start + _nanoseconds(deadline)
    while true {
        if try await condition() { return .nanoseconds(Int64(monotonicNanoseconds() - start)) }
        if monotonicNanoseconds() > limit { return nil }
        try? await Task.sleep(for: .milliseconds(1))
    }
}

func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Polls `condition` every millisecond until it holds or `deadline` passes;
/// returns the time it took (nil: it never held).
func waitFor(_ deadline: Duration, _ condition: () throws -> Bool) rethrows -> Duration? {
    let start = monotonicNanoseconds()
    let limit = start + _nanoseconds(deadline)
    while true {
        if try condition() { return .nanoseconds(Int64(monotonicNanoseconds() - start)) }
        if monotonicNanoseconds() > limit { return nil }
        usleep(1_000)
    }
}

/// A Redis command on a fresh connection (outside the near cache).
@discardableResult
func redis(_ port: Int, _ arguments: String...) throws -> _RedisReply {
    let connection = try _RedisConnection.connect(
        host: "127.0.0.1", port: port, connectTimeout: .seconds(2), commandTimeout: .seconds(2), "test")
    return try connection.pipeline([arguments.map { Array($0.utf8) }], "test")[0]
}

/// How many GET commands the server has run (INFO commandstats).
func getCalls(_ port: Int) throws -> Int {
    guard case .string(let bytes) = try redis(port, "INFO", "commandstats") else { return -1 }
    for line in String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline)
    where line.hasPrefix("cmdstat_get:") {
        // cmdstat_get:calls=3,usec=…
        if let field = line.split(separator: ",").first, let eq = field.lastIndex(of: "=") {
            return Int(field[field.index(after: eq)...]) ?? -1
        }
    }
    return 0
}

/// How many times the server has run `command` (INFO commandstats; lower case).
func commandCalls(_ port: Int, _ command: String) throws -> Int {
    guard case .string(let bytes) = try redis(port, "INFO", "commandstats") else { return -1 }
    for line in String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_\(command):") {
        if let field = line.split(separator: ",").first, let eq = field.lastIndex(of: "=") { return Int(field[field.index(after: eq)...]) ?? -1 }
    }
    return 0
}

/// A spawned process (helper or redis-server) whose stdout is read line by line.
final class Child {
    let pid: pid_t
    private let stdoutFD: Int32
    private var buffered: [UInt8] = []
    private var reaped = false

    init(_ executable: String, _ arguments: [String], stdoutToNull: Bool = false) throws {
        var out: [Int32] = [0, 0]
        guard pipe(&out) == 0 else { throw ShmError(.systemCall, "pipe", errno: errno) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if stdoutToNull {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        } else {
            posix_spawn_file_actions_adddup2(&actions, out[1], 1)
        }
        posix_spawn_file_actions_addclose(&actions, out[0])
        // The spawning thread (one of Swift's pool) may block signals: the child
        // starts with none blocked and SIGTERM at its default, or `stop()` could not stop it.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGTERM)
        sigaddset(&defaults, SIGINT)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = executable.contains("/")
            ? posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
            : posix_spawnp(&pid, executable, &actions, &attributes, argv, environ)
        close(out[1])
        guard rc == 0 else {
            close(out[0])
            throw ShmError(.systemCall, "posix_spawn(\(executable))", errno: rc)
        }
        self.pid = pid
        stdoutFD = out[0]
    }

    /// The next line of stdout, waiting at most `timeout`; nil on timeout or end of file.
    func readLine(timeout: Duration = .seconds(10)) -> String? {
        let deadline = monotonicNanoseconds() + _nanoseconds(timeout)
        while true {
            if let newline = buffered.firstIndex(of: 10) {
                let line = String(decoding: buffered[..<newline], as: UTF8.self)
                buffered.removeSubrange(...newline)
                return line
            }
            let now = monotonicNanoseconds()
            guard now < deadline else { return nil }
            var p = pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, Int32(min((deadline - now) / 1_000_000 + 1, 1000)))
            if ready <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { read(stdoutFD, $0.baseAddress, $0.count) }
            if n <= 0 { return nil }
            buffered += chunk[0..<n]
        }
    }

    /// Reads lines until one starts with `prefix`; returns it (nil: not within `timeout`).
    func waitForLine(_ prefix: String, timeout: Duration = .seconds(10)) -> String? {
        let deadline = monotonicNanoseconds() + _nanoseconds(timeout)
        while monotonicNanoseconds() < deadline {
            if let line = readLine(timeout: .nanoseconds(Int64(deadline - min(deadline, monotonicNanoseconds())))), line.hasPrefix(prefix) {
                return line
            }
        }
        return nil
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) without waiting.
    func send(_ signal: Int32) {
        if !reaped { _ = Glibc.kill(pid, signal) }
    }

    /// Sends `signal` and reaps the process (a killed process is a zombie, seen
    /// alive by nobody, until then). A process still there after 10 s is SIGKILLed.
    func kill(_ signal: Int32 = SIGKILL) {
        guard !reaped else { return }
        _ = Glibc.kill(pid, signal)
        var status: Int32 = 0
        let deadline = monotonicNanoseconds() + 10_000_000_000
        while waitpid(pid, &status, WNOHANG) == 0 {
            if monotonicNanoseconds() > deadline {
                _ = Glibc.kill(pid, SIGKILL)
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                break
            }
            usleep(2_000)
        }
        reaped = true
    }

    /// SIGTERM (a clean stop), then reap.
    func stop() { kill(SIGTERM) }

    deinit {
        kill(SIGKILL)
        close(stdoutFD)
    }
}

/// The directory holding this test binary and the package's other products.
func productsDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    let path = String(decoding: buffer[0..<max(0, n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
}

func spawnHelper(_ arguments: [String]) throws -> Child {
    try Child(productsDirectory() + "/ShmLRURedisTestHelper", arguments)
}

/// Spawns a subscriber process for `store` and waits until it reports `role` (e.g. "connected").
func spawnSubscriber(_ store: ShmStore, name: String, port: Int, until role: String? = "connected") throws -> Child {
    let child = try spawnHelper(["subscriber", String(store.key.unsignedValue), name, String(port)])
    if let role {
        guard child.waitForLine("role=\(role)") != nil else {
            throw ShmError(.lockTimeout, "subscriber process \(child.pid) did not report role=\(role)")
        }
    }
    return child
}

/// A free TCP port on 127.0.0.1 (bound and released at once).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// A redis-server of the test's own (to stop and restart), on `port`, without
/// persistence, with `extra` arguments (e.g. --requirepass).
func startRedisServer(port: Int, _ extra: [String] = [], password: String? = nil) throws -> Child {
    let server = getenv("SHMLRU_REDIS_SERVER").map { String(cString: $0) } ?? "redis-server"
    let child = try Child(
        server, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"] + extra,
        stdoutToNull: true)
    let ping: () -> Bool = {
        guard let connection = try? _RedisConnection.connect(
            host: "127.0.0.1", port: port, connectTimeout: .seconds(2), commandTimeout: .seconds(2), password: password, "test")
        else { return false }
        return (try? connection.pipeline([[Array("PING".utf8)]], "test"))?.first == .status("PONG")
    }
    guard waitFor(.seconds(10), ping) != nil else {
        throw ShmError(.lockTimeout, "redis-server on port \(port) did not answer PING")
    }
    return child
}
#endif  // Redis
