import Glibc

// Shared by the framework tests (Hummingbird, Vapor): a product of this package
// run as a child process with its output read line by line, a free loopback
// port, and one HTTP/1.1 exchange over a plain socket (no HTTP client package).
// Every wait is bounded: a server that never answers fails the test, it does
// not hang it.

/// A test's failure outside an expectation (a process that cannot start, a socket error).
public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The path of the product `name` of this package: next to the running test binary.
public func testProductPath(_ name: String) -> String {
    var buffer = [UInt8](repeating: 0, count: 4096)
    let n = buffer.withUnsafeMutableBytes { readlink("/proc/self/exe", $0.baseAddress!.assumingMemoryBound(to: CChar.self), 4095) }
    var parts = String(decoding: buffer[0..<max(0, n)], as: UTF8.self).split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast()
    return (parts + [Substring(name)]).joined(separator: "/")
}

/// A child process whose stdout and stderr go to one pipe that this process reads.
public final class TestProcess: @unchecked Sendable {
    /// The child's process id.
    public let pid: pid_t
    private let output: Int32
    private var pending: [UInt8] = []
    private var waited: (status: Int32, output: String)?

    /// Starts `path` with `arguments`.
    public init(_ path: String, _ arguments: [String]) throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw TestFailure("pipe: errno \(errno)") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        posix_spawn_file_actions_addclose(&actions, fds[0])
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
        close(fds[1])
        guard rc == 0 else {
            close(fds[0])
            throw TestFailure("posix_spawn(\(path)): \(rc)")
        }
        self.pid = pid
        output = fds[0]
    }

    deinit {
        if waited == nil {
            kill(pid, SIGKILL)
            _ = wait()
        }
    }

    /// The next line of output without its newline; nil at the end of the output
    /// or when none came within `timeout`.
    public func readLine(timeout: Duration = .seconds(120)) -> String? {
        let deadline = _deadline(after: timeout)
        while true {
            if let newline = pending.firstIndex(of: 10) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                return line
            }
            let left = deadline - _now()
            guard left > 0 else { return nil }
            var entry = pollfd(fd: output, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, Int32(min(left, 1000)))
            if ready < 0 && errno != EINTR { return nil }
            guard ready > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { read(output, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return nil }  // end of output
            pending.append(contentsOf: chunk[0..<n])
        }
    }

    /// Sends `signal` to the child.
    public func signal(_ signal: Int32) { kill(pid, signal) }

    /// Reads the rest of the output (for at most `timeout`, then kills the child)
    /// and waits for the exit; the status is the exit code, or 128 + signal.
    public func wait(timeout: Duration = .seconds(120)) -> (status: Int32, output: String) {
        if let waited { return waited }
        var lines: [String] = []
        let deadline = _deadline(after: timeout)
        while let line = readLine(timeout: .milliseconds(max(1, deadline - _now()))) { lines.append(line) }
        if !pending.isEmpty { lines.append(String(decoding: pending, as: UTF8.self)) }
        if _now() >= deadline { kill(pid, SIGKILL) }
        close(output)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        waited = (code, lines.joined(separator: "\n"))
        return waited!
    }
}

/// A loopback TCP port that was free a moment ago (bound to port 0, then closed).
public func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: errno \(errno)") }
    defer { close(fd) }
    var address = _loopback(port: 0)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw TestFailure("bind: errno \(errno)") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// One HTTP response.
public struct TestHTTPResponse: Sendable {
    /// The status code.
    public var status: Int
    /// The header fields, names in lower case.
    public var headers: [String: String]
    /// The body, as UTF-8.
    public var body: String
}

/// Sends one HTTP/1.1 request to 127.0.0.1:`port` on a new connection
/// (`Connection: close`) and reads the response; every socket wait is bounded by `timeout`.
public func httpRequest(
    port: Int, _ method: String, _ path: String, body: String = "", timeout: Duration = .seconds(30)
) throws -> TestHTTPResponse {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: errno \(errno)") }
    defer { close(fd) }
    var limit = timeval(tv_sec: Int(_milliseconds(timeout) / 1000), tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    var address = _loopback(port: port)
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw TestFailure("connect to port \(port): errno \(errno)") }
    let request = Array(
        "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
    var sent = 0
    while sent < request.count {
        let n = request[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw TestFailure("write: errno \(errno)") }
        sent += n
    }
    var received: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        if let response = _parse(received) { return response }
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else {
            if let response = _parse(received, complete: true) { return response }
            throw TestFailure("\(method) \(path): connection ended after \(received.count) bytes (errno \(n < 0 ? errno : 0))")
        }
        received.append(contentsOf: chunk[0..<n])
    }
}

/// The response in `bytes` once its head and `Content-Length` body are there
/// (or, with `complete`, the body up to the end of the connection).
func _parse(_ bytes: [UInt8], complete: Bool = false) -> TestHTTPResponse? {
    let separator: [UInt8] = [13, 10, 13, 10]
    guard bytes.count >= 4, let end = (0...(bytes.count - 4)).first(where: { bytes[$0..<$0 + 4].elementsEqual(separator) }) else {
        return nil
    }
    let lines = String(decoding: bytes[..<end], as: UTF8.self).split(separator: "\r\n")
    guard let statusLine = lines.first, statusLine.split(separator: " ").count >= 2,
        let status = Int(statusLine.split(separator: " ")[1])
    else { return nil }
    var headers: [String: String] = [:]
    for line in lines.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { continue }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingPrefix(" ").description
    }
    let body = bytes[(end + 4)...]
    if let length = headers["content-length"].flatMap({ Int($0) }) {
        guard body.count >= length else { return nil }
        return TestHTTPResponse(status: status, headers: headers, body: String(decoding: body.prefix(length), as: UTF8.self))
    }
    guard complete || headers["transfer-encoding"] == nil && status == 204 else { return nil }
    return TestHTTPResponse(status: status, headers: headers, body: String(decoding: body, as: UTF8.self))
}

func _loopback(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    return address
}

func _now() -> Int64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
}

/// `duration` from now in milliseconds, saturating.
func _deadline(after duration: Duration) -> Int64 {
    let (sum, overflow) = _now().addingReportingOverflow(_milliseconds(duration))
    return overflow ? .max : sum
}

func _milliseconds(_ duration: Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    let (ms, overflow) = max(0, seconds).multipliedReportingOverflow(by: 1000)
    let (total, overflowed) = ms.addingReportingOverflow(max(0, attoseconds) / 1_000_000_000_000_000)
    return overflow || overflowed ? .max : total
}

/// Runs the test helper (`ShmLRUTestHelper`, a product of this package) to its end:
/// its exit status, its `key=value` lines, and its whole output.
public func runTestHelper(_ arguments: [String]) throws -> (status: Int32, values: [String: String], output: String) {
    let run = try TestProcess(testProductPath("ShmLRUTestHelper"), arguments).wait()
    var values: [String: String] = [:]
    for line in run.output.split(separator: "\n") {
        if let eq = line.firstIndex(of: "=") { values[String(line[..<eq])] = String(line[line.index(after: eq)...]) }
    }
    return (run.status, values, run.output)
}

/// Field 22 of /proc/PID/stat (the process's start, in clock ticks since boot),
/// read independently of the library's own reader; nil if it cannot be read.
public func procStartTicks(_ pid: pid_t) -> UInt64? {
    guard let file = fopen("/proc/\(pid)/stat", "r") else { return nil }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 1024)
    guard fgets(&line, 1024, file) != nil else { return nil }
    let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    return fields.count > 19 ? UInt64(fields[19]) : nil
}
