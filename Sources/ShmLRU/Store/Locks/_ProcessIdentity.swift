import CShm
import Glibc
import Synchronization

/// A process as the lock table records it: its PID and its start time (field 22
/// of /proc/PID/stat, clock ticks since boot; 0 if it could not be read), so
/// that a PID reused by a new process is not mistaken for the old holder. What
/// counts as alive is `_isRunning` (Support/_ProcessLiveness.swift), shared with
/// the cache's lock.
package struct _ProcessIdentity: Equatable, Sendable {
    package var pid: Int32
    package var start: UInt64

    init(pid: Int32, start: UInt64) {
        self.pid = pid
        self.start = start
    }

    /// This process. Its start time is read from /proc once per PID (so it stays
    /// right after a fork), and cached only when the read succeeded: a process
    /// that could not read it (no descriptor left, /proc hidden) records 0,
    /// "unknown", and reads again next time, instead of keeping 0 for good (a 0
    /// matches any later process reusing the PID).
    package static var current: _ProcessIdentity {
        let pid = getpid()
        if let known = _current.withLock({ $0 }), known.pid == pid { return known }
        guard let start = _processStartTime(pid) else { return _ProcessIdentity(pid: pid, start: 0) }
        let identity = _ProcessIdentity(pid: pid, start: start)
        _current.withLock { $0 = identity }
        return identity
    }

    private static let _current = Mutex<_ProcessIdentity?>(nil)

    /// True while the process runs (a zombie or a PID now used by another process counts as dead).
    /// A start time of 0 (unknown) is alive for as long as the PID exists.
    var isAlive: Bool { _isRunning(pid, start: start == 0 ? nil : start) }
}
