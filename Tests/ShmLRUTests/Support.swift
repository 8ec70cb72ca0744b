import CShm
import Glibc
import ShmLRU
import Testing

/// A key no other test (or earlier run) uses: random, and checked free.
func uniqueKey() -> ShmKey {
    while true {
        let key = ShmKey(UInt32.random(in: 0x5000_0000...0x5FFF_FFFF))
        if !ShmRegion.exists(key: key) { return key }
    }
}

/// Runs `body` with a fresh key, and removes whatever segment has that key
/// afterwards, also when `body` throws or an expectation fails.
func withKey<R>(_ body: (ShmKey) throws -> R) throws -> R {
    let key = uniqueKey()
    defer { try? ShmRegion.remove(key: key) }
    return try body(key)
}

/// The result of a helper process.
struct HelperRun {
    var status: Int32
    var output: String
    var errorOutput: String
    /// `key=value` lines of stdout.
    var values: [String: String] {
        var result: [String: String] = [:]
        for line in output.split(separator: "\n") {
            if let eq = line.firstIndex(of: "=") { result[String(line[..<eq])] = String(line[line.index(after: eq)...]) }
        }
        return result
    }
}

/// The directory holding this test binary and the package's other products.
func productsDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    let path = n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    var parts = path.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast()
    // `swift test` runs `<products>/ShmLRUPackageTests.xctest` (a file on Linux)
    return parts.joined(separator: "/")
}

/// A spawned process with its stdout and stderr read to the end by `wait()`.
final class SpawnedProcess {
    let pid: pid_t
    private let stdoutFD: Int32
    private let stderrFD: Int32

    init(_ executable: String, _ arguments: [String]) throws {
        var outPipe: [Int32] = [0, 0]
        var errPipe: [Int32] = [0, 0]
        guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { throw ShmError(.systemCall, "pipe", errno: errno) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        posix_spawn_file_actions_addclose(&actions, outPipe[0])
        posix_spawn_file_actions_addclose(&actions, errPipe[0])
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        close(outPipe[1])
        close(errPipe[1])
        guard rc == 0 else {
            close(outPipe[0])
            close(errPipe[0])
            throw ShmError(.systemCall, "posix_spawn(\(executable))", errno: rc)
        }
        self.pid = pid
        stdoutFD = outPipe[0]
        stderrFD = errPipe[0]
    }

    /// Sends a signal (SIGKILL to fault-inject).
    func kill(_ signal: Int32) { _ = Glibc.kill(pid, signal) }

    /// Reads one line of stdout (blocking), without the newline; nil at end of file.
    func readLine() -> String? {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while read(stdoutFD, &byte, 1) == 1 {
            if byte == 10 { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
        }
        return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
    }

    /// Waits for the exit; the status is the exit code, or 128 + signal.
    func wait() -> HelperRun {
        let (output, errors) = Self.drain(stdoutFD, stderrFD)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return HelperRun(status: code, output: output, errorOutput: errors)
    }

    /// Reads both pipes to their ends together. Reading stdout to its end first
    /// hung for ever when a helper filled the stderr pipe (64 KiB) meanwhile:
    /// ThreadSanitizer's reports in `make sanitize` blocked the helper's write.
    private static func drain(_ out: Int32, _ err: Int32) -> (String, String) {
        var bytes: [[UInt8]] = [[], []]
        var fds = [pollfd(fd: out, events: Int16(POLLIN), revents: 0), pollfd(fd: err, events: Int16(POLLIN), revents: 0)]
        var chunk = [UInt8](repeating: 0, count: 65536)
        while fds.contains(where: { $0.fd >= 0 }) {
            if poll(&fds, nfds_t(fds.count), -1) < 0 {
                if errno == EINTR { continue }
                break
            }
            for i in fds.indices where fds[i].fd >= 0 && fds[i].revents != 0 {
                let n = chunk.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    close(fds[i].fd)
                    fds[i].fd = -1  // poll ignores it from now on
                } else {
                    bytes[i].append(contentsOf: chunk[0..<n])
                }
            }
        }
        for entry in fds where entry.fd >= 0 { close(entry.fd) }
        return (String(decoding: bytes[0], as: UTF8.self), String(decoding: bytes[1], as: UTF8.self))
    }
}

/// Spawns the test helper executable (a product of this package).
func spawnHelper(_ arguments: [String]) throws -> SpawnedProcess {
    try SpawnedProcess(productsDirectory() + "/ShmLRUTestHelper", arguments)
}

/// Runs the helper to completion.
func runHelper(_ arguments: [String]) throws -> HelperRun {
    try spawnHelper(arguments).wait()
}

/// Reads a whole file; nil if it cannot be opened.
func readFileBytes(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&chunk, 1, chunk.count, file)
        if n <= 0 { break }
        bytes += chunk[0..<n]
    }
    return bytes
}
