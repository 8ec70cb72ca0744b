import Glibc

// Whether the process or thread a shared word names still runs: the one check
// below both the cache's lock (`_SegmentLock`, owner word = thread id + start
// time) and the store's lock table (`_ProcessIdentity`, PID + start time).
//
// A holder is named by its id and its start time (field 22 of /proc/ID/stat,
// clock ticks since boot), so that an id reused by a new thread or process is
// not mistaken for the old holder. Reading the start time needs a new file
// descriptor and a visible /proc: a process at its descriptor limit, chrooted,
// or under a sandbox that hides /proc cannot read it, and then records
// "unknown" (the store's lock table: start time 0; the cache's owner word:
// 0xFFFFFFFF in its start-time half, so that a zeroed or forged word with start
// time 0 stays recoverable). The rule, the same on both sides:
//
// - a start time is read once per thread / process while that is possible, and
//   only a successful read is cached (never 0), so a later lock does not need a
//   descriptor and a failed read is tried again next time;
// - "could not tell" is alive: a holder recorded with an unknown start time is alive for
//   as long as its id exists (a reused id keeps it "alive": waiters then throw
//   their lock timeout, which is safe, where taking a live holder's lock over
//   would let two processes inside one structure); a waiter that cannot read
//   /proc itself asks kill(id, 0) and counts an existing id as alive;
// - only a known, different start time, a zombie, or an id that does not exist
//   is dead.

/// State letter and start time of a process or thread, from /proc/ID/stat; nil
/// if that cannot be read (no such id, /proc hidden, no descriptor left).
func _processStatus(_ id: Int32) -> (state: UInt8, start: UInt64)? {
    var buffer = [UInt8](repeating: 0, count: 1024)
    let path = "/proc/\(id)/stat"
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

/// The start time of process or thread `id`; nil if it cannot be read. Callers
/// record 0 for nil, and must not cache it.
func _processStartTime(_ id: Int32) -> UInt64? { _processStatus(id)?.start }

/// True unless the process or thread `id`, recorded with start time `start`
/// (nil: unknown, its holder could not read it), is known to be gone: it does
/// not exist, is a zombie, or has a known start time other than `start` (its id
/// was reused). `startMask` is the part of the start time that was recorded
/// (the cache's owner word keeps the low 32 bits).
func _isRunning(_ id: Int32, start: UInt64?, startMask: UInt64 = .max) -> Bool {
    guard id > 0 else { return false }
    guard let status = _processStatus(id) else {
        // No readable /proc entry: gone, or /proc hides it (hidepid, another
        // mount, no descriptor left here): kill(0) tells whether the id exists,
        // and an existing id whose start time cannot be read counts as alive.
        return kill(id, 0) == 0 || errno == EPERM
    }
    if status.state == UInt8(ascii: "Z") || status.state == UInt8(ascii: "X") || status.state == UInt8(ascii: "x") {
        return false
    }
    guard let start else { return true }
    return status.start & startMask == start & startMask
}
