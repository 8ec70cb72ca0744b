import CShm
import Glibc
import Synchronization

/// A process as the lock table records it: its PID and its start time (field 22
/// of /proc/PID/stat, clock ticks since boot), so that a PID reused by a new
/// process is not mistaken for the old holder.
struct _ProcessIdentity: Equatable, Sendable {
    var pid: Int32
    var start: UInt64

    /// This process (read from /proc once per PID, so it stays right after a fork).
    static var current: _ProcessIdentity {
        let pid = getpid()
        if let known = _current.withLock({ $0 }), known.pid == pid { return known }
        let identity = _ProcessIdentity(pid: pid, start: _processStartTime(pid) ?? 0)
        _current.withLock { $0 = identity }
        return identity
    }

    private static let _current = Mutex<_ProcessIdentity?>(nil)

    /// True while the process runs (a zombie or a PID now used by another process counts as dead).
    var isAlive: Bool {
        guard pid > 0 else { return false }
        guard let status = _processStatus(pid) else {
            // No /proc entry: fall back on kill(0), which cannot see PID reuse.
            return kill(pid, 0) == 0 || errno == EPERM
        }
        if status.state == UInt8(ascii: "Z") || status.state == UInt8(ascii: "X") || status.state == UInt8(ascii: "x") {
            return false
        }
        return start == 0 || status.start == start
    }
}

func _processStartTime(_ pid: Int32) -> UInt64? { _processStatus(pid)?.start }

/// State letter and start time of a process, from /proc/PID/stat; nil if there is none.
func _processStatus(_ pid: Int32) -> (state: UInt8, start: UInt64)? {
    var buffer = [UInt8](repeating: 0, count: 1024)
    let path = "/proc/\(pid)/stat"
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var count = 0
    while count < buffer.count {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
        if n < 0, errno == EINTR { continue }
        if n <= 0 { break }
        count += n
    }
    // "pid (comm) state ppid …": comm may hold spaces and parentheses; fields follow the last ')'.
    guard let closeParen = buffer[0..<count].lastIndex(of: UInt8(ascii: ")")) else { return nil }
    let fields = buffer[(closeParen + 1)..<count].split(separator: UInt8(ascii: " "))
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    guard fields.count > 19, let state = fields[0].first else { return nil }
    var start: UInt64 = 0
    for digit in fields[19] {
        guard digit >= 48, digit <= 57 else { return nil }
        let (m, o1) = start.multipliedReportingOverflow(by: 10)
        let (s, o2) = m.addingReportingOverflow(UInt64(digit - 48))
        guard !o1, !o2 else { return nil }
        start = s
    }
    return (state, start)
}
