import CShm
import Glibc

// Per-key cross-process locks (cluster-shared-memory's getLock / releaseLock /
// mutex). Locks are advisory: set, get and remove do not take them. See
// _LockTable.swift and, for async waits, _AsyncLockWaiter.swift.

extension ShmStore {
    /// A held lock: give it back to `unlock`.
    public struct LockToken: Sendable, Hashable, CustomStringConvertible {
        /// The key whose lock this is.
        public let key: String
        /// Unique to this grant (the holder's PID and the lock's grant counter):
        /// a stale or wrong token is refused.
        public let id: UInt64
        /// True when the previous holder died holding the lock and it was released
        /// for this grant: what it protected may be half-updated.
        public let previousHolderDied: Bool

        /// `LockToken("key", 0x…)`, noting a previous holder that died.
        public var description: String {
            "LockToken(\"\(key)\", 0x\(String(id, radix: 16))\(previousHolderDied ? ", previous holder died" : ""))"
        }
    }

    /// Takes the lock of `key`, blocking the calling thread while another holds
    /// it. Queued waiters are served in arrival order; a release frees the lock
    /// for a caller running at that moment (not yet queued) and wakes the first
    /// waiter, unless that waiter has waited 1 ms: then it is handed the lock
    /// directly (no waiter is passed over for longer). A holder that dies is detected within about 50 ms, and its lock
    /// handed to the next waiter, whose token says so. Not reentrant: a second
    /// `lock` of the same key from the same process waits for the first to be released.
    ///
    /// In async code use `lock(_:timeout:) async` (or `withLock`/`mutex` with an
    /// async body): a blocking wait on a cooperative-pool thread takes that thread
    /// from every task of the process, and enough of them (also through a
    /// synchronous helper the `noasync` check cannot see) stop the holder's own
    /// task from running to release the lock. The store's finite default
    /// `lockTimeout` turns such a deadlock into `.lockTimeout` errors.
    ///
    /// - Parameters:
    ///   - key: the key whose lock to take (it need not hold a value).
    ///   - timeout: the longest wait (0: try once); nil: the store's
    ///     `lockTimeout` (10 s unless configured). Very long timeouts saturate.
    /// - Throws: `.lockTimeout`; `.invalidArgument` for a negative timeout or a
    ///   key longer than the record size; `.full` when every lock slot is bound
    ///   to another key. A full waiter table is not an error: the call waits for
    ///   an entry to free up.
    @available(*, noasync, message: "blocks the thread while waiting: use the async lock(_:timeout:)")
    @inlinable
    public func blockingLock(_ key: String, timeout: Duration? = nil) throws(ShmError) -> LockToken {
        // Uncontended: one CAS, called straight from the caller's code.
        if let token = _lockIfFree(key, timeout: timeout) { return token }
        return try _blockingLockWaiting(key, timeout: timeout)
    }

    /// The blocking lock's one try of the lock-free path, nothing else built;
    /// nil: `_blockingLockWaiting` (which also checks a negative timeout).
    @usableFromInline func _lockIfFree(_ key: String, timeout: Duration?) -> LockToken? {
        guard timeout == nil || timeout! >= .zero, let grant = _locks.acquireSpinning(key, me: _ProcessIdentity.current, budget: 0)
        else { return nil }
        ShmEvents._emit(ShmEvent(.keyLockWaited, key: self.key, operation: _operation("lock", key), waited: .zero))
        return LockToken(key: key, id: grant.id, previousHolderDied: grant.previousHolderDied)
    }

    /// `blockingLock` after its lock-free try failed: the spin, the queue, the wait.
    @usableFromInline @inline(never)
    func _blockingLockWaiting(_ key: String, timeout: Duration?) throws(ShmError) -> LockToken {
        let wait: _LockWait
        switch try _beginLock(key, timeout: timeout, spin: nil) {
        case .taken(let token): return token
        case .wait(let next): wait = next!
        }
        let (operation, identity, deadline, start) = (wait.operation, wait.identity, wait.deadline, wait.start)
        let grant: _LockTable.Grant?
        do throws(ShmError) { grant = try _locks.acquire(identity, tryOnly: false, deadline: deadline, isCancelled: { false }, operation) } catch {
            _noteLockFailure(error, operation, since: start)
            throw error
        }
        guard let grant else { throw ShmError(.lockTimeout, operation) }
        _noteGrant(grant.previousHolderDied, operation, since: start)
        return LockToken(key: key, id: grant.id, previousHolderDied: grant.previousHolderDied)
    }

    /// Takes the lock of `key` if it is free and nobody waits for it; nil
    /// otherwise. Never waits for the key's lock; the lock table's own mutex (held
    /// by peers only for table updates) is waited for at most 0.5 ms.
    /// - Throws: `.lockTimeout` when the lock table's mutex stayed busy (a peer
    ///   stopped or killed inside a table update, or a forged segment).
    public func tryLock(_ key: String) throws(ShmError) -> LockToken? {
        // Not past waiters (no barging: "nobody waits").
        if let grant = _locks.acquireSpinning(key, me: _ProcessIdentity.current, budget: 0, barge: false) {
            return LockToken(key: key, id: grant.id, previousHolderDied: grant.previousHolderDied)
        }
        let operation = _operation("tryLock", key)
        let identity = try _locks.identity(key, operation)
        guard let grant = try _locks.acquire(identity, tryOnly: true, deadline: nil, isCancelled: { false }, operation) else {
            return nil
        }
        if grant.previousHolderDied {
            ShmEvents._emit(ShmEvent(.keyLockHolderDied, key: self.key, operation: operation, detail: "its holder died holding it"))
        }
        return LockToken(key: key, id: grant.id, previousHolderDied: grant.previousHolderDied)
    }

    /// Releases the lock of `key` held with `token` (from any thread or process),
    /// handing it to the next waiter if there is one.
    /// - Throws: `.lockNotHeld` for a token of another key, a wrong token, or a
    ///   stale one (released already, or taken over after its holder was found dead).
    @inlinable
    public func unlock(_ key: String, _ token: LockToken) throws(ShmError) {
        if _unlockIfUncontended(key, token) { return }
        try _unlockWaking(key, token)
    }

    /// The lock-free release: one CAS when nobody waits (and no async caller of
    /// this handle waits to be passed the lock). False: `_unlockWaking` decides.
    @usableFromInline func _unlockIfUncontended(_ key: String, _ token: LockToken) -> Bool {
        token.key == key && !_asyncLocks.hasQueuedCallers && _locks.releaseFast(key, id: token.id)
    }

    /// `unlock` through the table mutex: hands the lock to the next waiter, or
    /// refuses a token that does not hold it.
    @usableFromInline @inline(never)
    func _unlockWaking(_ key: String, _ token: LockToken) throws(ShmError) {
        guard token.key == key else {
            throw ShmError(.lockNotHeld, _operation("unlock", key), detail: "the token is for key \"\(token.key)\"")
        }
        try _unlock(try _locks.identity(key, _operation("unlock", key)), id: token.id, _operation("unlock", key))
    }

    /// Runs `body` holding the lock of `key`; releases it when `body` returns or
    /// throws. Blocks the calling thread while it waits: from async code use the
    /// async `withLock` (or `mutex`).
    /// (A name of its own, so that `withLock` in async code, top-level code
    /// included, can only be the async one.)
    @available(*, noasync, message: "blocks the thread while waiting: use the async withLock(_:timeout:_:) or mutex(_:timeout:_:)")
    public func withBlockingLock<R>(_ key: String, timeout: Duration? = nil, _ body: (LockToken) throws -> R) throws -> R {
        let token = try blockingLock(key, timeout: timeout)
        let result: R
        do { result = try body(token) } catch {
            try? unlock(key, token)
            throw error
        }
        try unlock(key, token)
        return result
    }

    /// The PID of the live process holding the lock of `key` (nil when free), and
    /// how many lock calls of live processes wait for it.
    public func lockState(_ key: String) throws(ShmError) -> (holder: Int32?, waiters: Int) {
        let operation = _operation("lockState", key)
        let state = try _locks.state(of: try _locks.identity(key, operation), operation)
        return (state.holder == 0 ? nil : state.holder, state.waiters)
    }

    // MARK: Async

    /// Takes the lock of `key` without blocking any thread. A free lock is taken
    /// at once (one atomic operation), by a cancelled task too; otherwise, after
    /// a spin of about a microsecond, the task is suspended (a cancelled task
    /// throws `.cancelled` instead) and resumed holding the lock, in the
    /// order this handle's callers queued: by the releasing thread when the
    /// release is in this process (a holder passes the lock to the next caller
    /// of its process for up to 1 ms while others wait, then the other
    /// processes' waiters get their turn, as for the blocking lock), else by its
    /// process's one lock-waiting thread. Cancelling the task
    /// abandons the wait and throws `.cancelled`.
    ///
    /// - Parameters:
    ///   - key: the key whose lock to take.
    ///   - timeout: as for the blocking `lock`.
    @inlinable
    nonisolated(nonsending) public func lock(_ key: String, timeout: Duration? = nil) async throws(ShmError) -> LockToken {
        // Uncontended: one CAS, no hop (inlinable: a synchronous call in the
        // caller's async frame, no frame allocated). A short spin while a holder
        // is about to release; then the waiting thread's queue.
        if let token = try _lockWithoutWaiting(key, timeout: timeout) { return token }
        return try await _lockWaiting(key, timeout: timeout)
    }

    /// The async lock's start: checks the timeout; then, unless a caller of this
    /// handle already queued (FIFO), the lock-free path with a spin of about a
    /// microsecond. Nil: wait (`_lockWaiting`). Cancellation is checked only on
    /// the way to a wait (`_AsyncLockWaiter.lock`): a lock that is free is taken
    /// by a cancelled task too, as by a lock call that never suspends.
    @usableFromInline func _lockWithoutWaiting(_ key: String, timeout: Duration?) throws(ShmError) -> LockToken? {
        let spin: UInt64? = _asyncLocks.hasQueuedCallers ? nil : _LockTable.spinNanoseconds / 4
        switch try _beginLock(key, timeout: timeout, spin: spin, prepareWait: false) {
        case .taken(let token): return token
        case .wait: return nil
        }
    }

    /// The async lock's wait, after `_lockWithoutWaiting` found the lock taken.
    @usableFromInline func _lockWaiting(_ key: String, timeout: Duration?) async throws(ShmError) -> LockToken {
        try await _awaitLock(try _reserveLock(key, timeout: timeout))
    }

    /// A caller's place in its key's local queue, taken by `_reserveLock` in the
    /// order of the calls and awaited by `_awaitLock` (maybe after a hop).
    struct _ReservedLock: Sendable {
        let key: String
        let operation: String
        let slot: _AsyncLockWaiter.Slot
        let start: UInt64
    }

    /// Queues the caller for the lock of `key` (synchronous: the FIFO place is
    /// the call's, whatever the task does before it waits).
    func _reserveLock(_ key: String, timeout: Duration?) throws(ShmError) -> _ReservedLock {
        let operation = _operation("lock", key)
        try _checkLockTimeout(timeout, operation)  // a KeyLock's withLock comes here first
        let identity = try _locks.identity(key, operation)
        let (deadline, start) = (_locks.deadline(timeout), _monotonicNanoseconds())
        do throws(ShmError) {
            let slot = try _asyncLocks.reserve(identity, deadline: deadline, operation)
            return _ReservedLock(key: key, operation: operation, slot: slot, start: start)
        } catch {
            _noteLockFailure(error, operation, since: start)
            throw error
        }
    }

    /// The lock of a place `_reserveLock` took, once it comes (or the error
    /// that ended the wait).
    func _awaitLock(_ reserved: _ReservedLock) async throws(ShmError) -> LockToken {
        let grant: _LockTable.Grant
        do throws(ShmError) { grant = try await _asyncLocks.wait(reserved.slot) } catch {
            _noteLockFailure(error, reserved.operation, since: reserved.start)
            throw error
        }
        _noteGrant(grant.previousHolderDied, reserved.operation, since: reserved.start)
        return LockToken(key: reserved.key, id: grant.id, previousHolderDied: grant.previousHolderDied)
    }

    /// Runs `body` holding the lock of `key` (cluster-shared-memory's `mutex`),
    /// waiting without blocking any thread; releases it when `body` returns or throws.
    ///
    /// When it must wait, it waits with the lock hand-over executor as its task's
    /// preference, and its release runs the next caller of this process queued
    /// for the key on this thread (see _LockHandOffExecutor.swift): a caller
    /// handed the lock runs at once instead of holding it while it waits for a
    /// pool thread. The body runs isolated to `isolation` as always.
    public func mutex<R>(
        _ key: String, timeout: Duration? = nil, isolation: isolated (any Actor)? = #isolation,
        _ body: (LockToken) async throws -> R
    ) async throws -> R {
        if let token = try _lockWithoutWaiting(key, timeout: timeout) {
            return try await _holding(token, isolation: isolation, body) { () throws(ShmError) in try unlock(key, token) }
        }
        // The place in line now, in call order; then the wait on the hand-over
        // executor (entering its preference is a hop, which may reorder tasks).
        let reserved = try _reserveLock(key, timeout: timeout)
        return try await withTaskExecutorPreference(_LockHandOffExecutor.shared, isolation: isolation) {
            let token = try await _awaitLock(reserved)
            return try await _holding(token, isolation: isolation, body) { () throws(ShmError) in try unlock(key, token) }
        }
    }

    /// `body` with the lock of `token`, then `release` (also when `body` throws:
    /// its error wins), handing the lock over on this thread (`_LockHandOffExecutor`).
    func _holding<R>(
        _ token: LockToken, isolation: isolated (any Actor)?, _ body: (LockToken) async throws -> R,
        release: () throws(ShmError) -> Void
    ) async throws -> R {
        let result: R
        do { result = try await body(token) } catch {
            try? _LockHandOffExecutor.handingOff(release)
            throw error
        }
        try _LockHandOffExecutor.handingOff(release)
        return result
    }

    /// `withLock` for async code: the same as `mutex`.
    public func withLock<R>(
        _ key: String, timeout: Duration? = nil, isolation: isolated (any Actor)? = #isolation,
        _ body: (LockToken) async throws -> R
    ) async throws -> R {
        try await mutex(key, timeout: timeout, isolation: isolation, body)
    }

    // MARK: Internals

    /// What a lock call that must wait needs: its operation's name, the key's
    /// identity, the deadline and when the wait began.
    struct _LockWait {
        let operation: String
        let identity: _LockTable.Identity
        let deadline: UInt64?
        let start: UInt64
    }

    enum _LockStart {
        case taken(LockToken)
        /// nil: not prepared (`prepareWait` false).
        case wait(_LockWait?)
    }

    /// The start shared by the blocking and the async lock: checks the timeout;
    /// tries the lock-free
    /// path, spinning up to `spin` ns while the lock is held (nil: no try); else
    /// what the wait needs. The operation's name (a string built for errors and
    /// events) only when it is needed.
    @inline(__always)
    func _beginLock(_ key: String, timeout: Duration?, spin: UInt64?, prepareWait: Bool = true)
        throws(ShmError) -> _LockStart
    {
        try _checkLockTimeout(timeout, _operation("lock", key))
        if let spin, let grant = _locks.acquireSpinning(key, me: _ProcessIdentity.current, budget: spin) {
            ShmEvents._emit(ShmEvent(.keyLockWaited, key: self.key, operation: _operation("lock", key), waited: .zero))
            return .taken(LockToken(key: key, id: grant.id, previousHolderDied: grant.previousHolderDied))
        }
        guard prepareWait else { return .wait(nil) }
        let operation = _operation("lock", key)
        let identity = try _locks.identity(key, operation)
        return .wait(_LockWait(operation: operation, identity: identity, deadline: _locks.deadline(timeout), start: _monotonicNanoseconds()))
    }

    /// Tells the event observers (ShmEvents) about a lock granted after a wait,
    /// or taken over from a holder that died.
    func _noteGrant(_ previousHolderDied: Bool, _ operation: String, since start: UInt64) {
        ShmEvents._emit(ShmEvent(.keyLockWaited, key: self.key, operation: operation, waited: _waited(since: start)))
        if previousHolderDied {
            ShmEvents._emit(ShmEvent(.keyLockHolderDied, key: self.key, operation: operation, detail: "its holder died holding it"))
        }
    }

    /// Tells the event observers about a lock wait that timed out.
    func _noteLockFailure(_ error: ShmError, _ operation: String, since start: UInt64) {
        guard error.code == .lockTimeout else { return }
        ShmEvents._emit(ShmEvent(.lockTimeout, key: self.key, operation: operation, detail: error.detail, waited: _waited(since: start)))
    }

    private func _waited(since start: UInt64) -> Duration {
        let now = _monotonicNanoseconds()
        return .nanoseconds(Int64(clamping: now &- min(start, now)))
    }

    /// The deadline of a lock wait: `timeout` from now (saturating), or the
    /// store's lock timeout for nil.
    func _lockDeadline(_ timeout: Duration?, _ operation: @autoclosure () -> String) throws(ShmError) -> UInt64? {
        try _checkLockTimeout(timeout, operation())
        return _locks.deadline(timeout)
    }

    /// Throws `.invalidArgument` for a negative lock timeout.
    @inline(__always)
    func _checkLockTimeout(_ timeout: Duration?, _ operation: @autoclosure () -> String) throws(ShmError) {
        if let timeout, timeout < .zero {
            throw ShmError(.invalidArgument, operation(), detail: "a lock timeout must not be negative (0: try once), not \(timeout)")
        }
    }

    func _unlock(_ identity: _LockTable.Identity, id: UInt64, _ operation: @autoclosure () -> String) throws(ShmError) {
        // An async caller of this handle queued for the key: passed the lock here,
        // no release (within the fairness window, see _AsyncLockWaiter).
        if _asyncLocks.passLocally(identity, id: id) { return }
        if let entry = try _locks.release(identity, id: id, operation()) {
            _asyncLocks.delivered(to: entry)
        }
    }
}

/// The monotonic instant `duration` from now (negative durations: now; saturating).
func _deadline(after duration: Duration) -> UInt64 {
    _saturatingAdd(_monotonicNanoseconds(), UInt64(max(0, _nanoseconds(duration))))
}
