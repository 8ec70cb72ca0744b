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

    /// This process. Its start time is read from /proc once per process and
    /// cached only when the read succeeded: a process that could not read it (no
    /// descriptor left, /proc hidden) records 0, "unknown", and reads again next
    /// time, instead of keeping 0 for good (a 0 matches any later process
    /// reusing the PID). The cache is two atomics, no system call (an
    /// uncontended key lock asks on every call): a fork's child forgets it in
    /// a `pthread_atfork` handler, so it never names its parent.
    package static var current: _ProcessIdentity {
        let pid = _cachedPID.load(ordering: .acquiring)
        if pid != 0 { return _ProcessIdentity(pid: pid, start: _cachedStart.load(ordering: .relaxed)) }
        _ = _forgetAtFork
        let now = getpid()
        guard let start = _processStartTime(now) else { return _ProcessIdentity(pid: now, start: 0) }
        _cachedStart.store(start, ordering: .relaxed)
        _cachedPID.store(now, ordering: .releasing)
        return _ProcessIdentity(pid: now, start: start)
    }

    /// The cached PID (0: none) and start time, written start first.
    private static let _cachedPID = Atomic<Int32>(0)
    private static let _cachedStart = Atomic<UInt64>(0)
    /// Registers, once, the fork handler that clears the cache in the child.
    private static let _forgetAtFork: Void = {
        _ = pthread_atfork(nil, nil) { _ProcessIdentity._cachedPID.store(0, ordering: .releasing) }
    }()

    /// True while the process runs (a zombie or a PID now used by another process counts as dead).
    /// A start time of 0 (unknown) is alive for as long as the PID exists.
    var isAlive: Bool { _isRunning(pid, start: start == 0 ? nil : start) }
}
