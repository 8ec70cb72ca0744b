import Glibc
import Synchronization

// The master <-> worker protocol, over two pipes per worker: commands on the
// worker's fd 3, one line each; the worker answers each with one line on its
// fd 4, `ok KEY=VALUE …` or `error MESSAGE`. A worker whose command pipe closes
// (the master exited, however) exits too.

let workerCommandFD: Int32 = 3
let workerReplyFD: Int32 = 4

struct ExampleFailure: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

/// Reads `\n`-terminated lines from a file descriptor.
final class LineReader {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(fd: Int32) { self.fd = fd }

    /// The next line, or nil at end of file. With `timeoutMilliseconds`, throws
    /// when no whole line came in time (a failure guard, not synchronisation).
    func readLine(timeoutMilliseconds: Int32 = -1) throws(ExampleFailure) -> String? {
        while true {
            if interrupted.load(ordering: .relaxed) { throw ExampleFailure("interrupted") }
            if let newline = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, timeoutMilliseconds)
            if ready < 0 {
                if errno == EINTR { continue }  // a SIGINT/SIGTERM is seen at the loop's top
                throw ExampleFailure("poll: \(String(cString: strerror(errno)))")
            }
            if ready == 0 { throw ExampleFailure("no answer within \(timeoutMilliseconds / 1000) s") }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                guard !buffer.isEmpty else { return nil }
                defer { buffer.removeAll() }
                return String(decoding: buffer, as: UTF8.self)
            }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }
}

/// A worker process as the master sees it.
final class WorkerProcess {
    let id: Int
    let pid: pid_t
    private var commandFD: Int32
    private let replies: LineReader
    private(set) var exitStatus: Int32?

    /// Starts `executable --worker ID [--fail-at STEP]` with its pipes on fds 3 and 4.
    init(executable: String, id: Int, failAt: String?) throws(ExampleFailure) {
        var command: [Int32] = [0, 0]
        var reply: [Int32] = [0, 0]
        // Close-on-exec everywhere (the master is single-threaded: no spawn can slip
        // in between), so that no worker inherits another's pipes and each pipe's
        // end of file means what it says.
        guard pipe(&command) == 0, pipe(&reply) == 0 else {
            throw ExampleFailure("pipe: \(String(cString: strerror(errno)))")
        }
        for fd in command + reply { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        // The child's ends, moved above 3 and 4 so that the dup2s below cannot clobber one another.
        let childCommand = fcntl(command[0], F_DUPFD_CLOEXEC, 10)
        let childReply = fcntl(reply[1], F_DUPFD_CLOEXEC, 10)
        close(command[0])
        close(reply[1])
        defer {
            close(childCommand)
            close(childReply)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, childCommand, workerCommandFD)
        posix_spawn_file_actions_adddup2(&actions, childReply, workerReplyFD)
        var argv = [executable, "--worker", String(id)]
        if let failAt { argv += ["--fail-at", failAt] }
        let cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, nil, cArguments, environ)
        guard rc == 0 else {
            close(command[1])
            close(reply[0])
            throw ExampleFailure("posix_spawn(\(executable)): \(String(cString: strerror(rc)))")
        }
        self.id = id
        self.pid = pid
        commandFD = command[1]
        replies = LineReader(fd: reply[0])
    }

    deinit {
        if commandFD >= 0 { close(commandFD) }
        close(replies.fd)
    }

    /// Sends one command and returns the reply's `key=value` fields; throws if the
    /// worker answers `error`, dies, or does not answer within 30 s.
    func request(_ line: String) throws(ExampleFailure) -> [(key: String, value: String)] {
        let step = String(line.prefix { $0 != " " })
        guard commandFD >= 0 else { throw ExampleFailure("worker \(id) was stopped") }
        writeAll(commandFD, line + "\n")
        let answer: String?
        do { answer = try replies.readLine(timeoutMilliseconds: 30_000) } catch {
            throw ExampleFailure("worker \(id) (pid \(pid)) during '\(step)': \(error.message)")
        }
        guard let answer else {
            let status = reap()
            throw ExampleFailure("worker \(id) (pid \(pid)) failed during '\(step)': it \(describeStatus(status))")
        }
        if answer.hasPrefix("error ") {
            throw ExampleFailure("worker \(id) reported during '\(step)': \(answer.dropFirst(6))")
        }
        guard answer == "ok" || answer.hasPrefix("ok ") else {
            throw ExampleFailure("worker \(id) answered '\(step)' with \(answer)")
        }
        return answer.split(separator: " ").dropFirst().map { field in
            let parts = field.split(separator: "=", maxSplits: 1)
            return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        }
    }

    /// Asks the worker to exit and closes its command pipe (a worker exits at end
    /// of file too), then waits for the exit; after 5 s, kills it. Returns the
    /// wait status.
    @discardableResult
    func stop() -> Int32 {
        if let exitStatus { return exitStatus }
        if commandFD >= 0 {
            writeAll(commandFD, "exit\n")  // EPIPE if it is gone: nothing to do
            close(commandFD)
            commandFD = -1
        }
        // Its reply pipe reaches end of file when it exits.
        while true {
            do {
                guard try replies.readLine(timeoutMilliseconds: 5_000) != nil else { break }
            } catch {
                _ = kill(pid, SIGKILL)
                break
            }
        }
        return reap()
    }

    private func reap() -> Int32 {
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        exitStatus = status
        return status
    }
}

/// "exited with status 3", "was killed by signal 9".
func describeStatus(_ status: Int32) -> String {
    let signal = status & 0x7f
    return signal == 0 ? "exited with status \((status >> 8) & 0xff)" : "was killed by signal \(signal)"
}
