import CShm
import Glibc

// Per-key cross-process locks (cluster-shared-memory's getLock / releaseLock / mutex). Locks
// are advisory: set, get and remove do not take them. See ShmLockTable.swift.

extension ShmStore {
    /// A held lock: give it back to `unlock`.
    public struct LockToken: Sendable, Hashable, CustomStringConvertible {
        /// The key whose lock this is.
        public let key: String
        /// Random and unique to this grant: a stale or wrong token is refused.
        public let id: UInt64
        /// True when the previous holder died holding the lock and it was released
        /// for this grant: what it protected may be half-updated.
        public let previousHolderDied: Bool

        /// `LockToken("key", 0x…)`, noting a previous holder that died.
        public var description: String {
            "LockToken(\"\(key)\", 0x\(String(id, radix: 16))\(previousHolderDied ? ", previous holder died" : ""))"
        }
    }

    /// Takes the lock of `key`, waiting (in arrival order) while another holds it.
    /// A holder that dies is detected within about 50 ms, and its lock handed to
    /// the next waiter, whose token says so. Not reentrant: a second `lock` of the
    /// same key from the same process waits for the first to be released.
    ///
    /// - Parameters:
    ///   - key: the key whose lock to take (it need not hold a value).
    ///   - timeout: the longest wait; nil waits for ever.
    /// - Throws: `.lockTimeout`; `.full` when the lock table has no free slot or
    ///   waiter entry.
    public func lock(_ key: String, timeout: Duration? = nil) throws(ShmError) -> LockToken {
        try _lock(key, timeout: timeout, isCancelled: { false })
    }

    /// Takes the lock of `key` if it is free and nobody waits for it; nil otherwise.
    public func tryLock(_ key: String) throws(ShmError) -> LockToken? {
        let operation = _operation("tryLock", key)
        guard let grant = try _locks.acquire(.init(key), tryOnly: true, deadline: nil, isCancelled: { false }, operation) else {
            return nil
        }
        if grant.previousHolderDied {
            ShmEvents._emit(ShmEvent(.keyLockHolderDied, key: self.key, operation: operation, detail: "its holder died holding it"))
        }
        return LockToken(key: key, id: grant.id, previousHolderDied: grant.previousHolderDied)
    }

    /// Releases the lock of `key` held with `token` (from any thread or process).
    /// - Throws: `.lockNotHeld` for a token of another key, a wrong token, or a
    ///   stale one (released already, or taken over after its holder was found dead).
    public func unlock(_ key: String, _ token: LockToken) throws(ShmError) {
        let operation = _operation("unlock", key)
        guard token.key == key else {
            throw ShmError(.lockNotHeld, operation, detail: "the token is for key \"\(token.key)\"")
        }
        try _locks.release(.init(key), id: token.id, operation)
    }

    /// Runs `body` holding the lock of `key`; releases it when `body` returns or
    /// throws. Blocks the calling thread while it waits: from async code use `mutex`.
    @available(*, noasync, message: "blocks the thread while waiting: use mutex(_:timeout:_:)")
    public func withLock<R>(_ key: String, timeout: Duration? = nil, _ body: (LockToken) throws -> R) throws -> R {
        let token = try lock(key, timeout: timeout)
        let result: R
        do { result = try body(token) } catch {
            try? unlock(key, token)
            throw error
        }
        try unlock(key, token)
        return result
    }

    /// The PID of the live process holding the lock of `key` (nil when free), and
    /// how many lock calls wait for it.
    public func lockState(_ key: String) throws(ShmError) -> (holder: Int32?, waiters: Int) {
        let state = try _locks.state(of: .init(key), _operation("lockState", key))
        return (state.holder == 0 ? nil : state.holder, state.waiters)
    }

    // MARK: Async

    /// Takes the lock of `key` without blocking Swift's cooperative thread pool:
    /// a contended wait runs on a dedicated thread. Cancelling the task abandons
    /// the wait (within about 50 ms) and throws `.cancelled`.
    public func lock(_ key: String, timeout: Duration? = nil) async throws(ShmError) -> LockToken {
        if let token = try tryLock(key) { return token }
        try _checkCancelled(key)
        let deadline = timeout.map { _deadline(after: $0) }
        let cancelled = _CancelFlag()
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<LockToken, any Error>) in
                    let thread = _startThread { [self] in
                        continuation.resume(
                            with: Result { () throws(ShmError) -> LockToken in
                                try _lock(key, deadline: deadline, isCancelled: { cancelled.isSet })
                            })
                    }
                    if let thread {
                        pthread_detach(thread)
                    } else {
                        continuation.resume(throwing: ShmError(.systemCall, _operation("lock", key), detail: "pthread_create failed"))
                    }
                }
            } onCancel: {
                cancelled.set()
            }
        } catch let error as ShmError {
            throw error
        } catch {
            throw ShmError(.systemCall, _operation("lock", key), detail: "\(error)")
        }
    }

    /// Runs `body` holding the lock of `key` (cluster-shared-memory's `mutex`), waiting without
    /// blocking the cooperative pool; releases it when `body` returns or throws.
    public func mutex<R>(
        _ key: String, timeout: Duration? = nil, isolation: isolated (any Actor)? = #isolation,
        _ body: (LockToken) async throws -> R
    ) async throws -> R {
        let token = try await lock(key, timeout: timeout)
        let result: R
        do { result = try await body(token) } catch {
            try? unlock(key, token)
            throw error
        }
        try unlock(key, token)
        return result
    }

    // MARK: Internals

    @inline(never)
    func _emitLockEvent(_ kind: ShmEvent.Kind, _ operation: String, since start: UInt64, detail: String?) {
        let now = _monotonicNanoseconds()
        let waited = Duration.nanoseconds(Int64(clamping: now &- min(start, now)))
        ShmEvents._emit(ShmEvent(kind, key: self.key, operation: operation, detail: detail, waited: waited))
    }

    func _lock(_ key: String, timeout: Duration?, isCancelled: () -> Bool) throws(ShmError) -> LockToken {
        try _lock(key, deadline: timeout.map { _deadline(after: $0) }, isCancelled: isCancelled)
    }

    func _lock(_ key: String, deadline: UInt64?, isCancelled: () -> Bool) throws(ShmError) -> LockToken {
        let operation = _operation("lock", key)
        if let token = try tryLock(key) { return token }  // free: no wait, no event
        let start = _monotonicNanoseconds()
        let grant: (id: UInt64, previousHolderDied: Bool)?
        do { grant = try _locks.acquire(.init(key), tryOnly: false, deadline: deadline, isCancelled: isCancelled, operation) } catch {
            if error.code == .lockTimeout { _emitLockEvent(.lockTimeout, operation, since: start, detail: error.detail) }
            throw error
        }
        guard let grant else { throw ShmError(.lockTimeout, operation) }
        _emitLockEvent(.keyLockWaited, operation, since: start, detail: nil)
        if grant.previousHolderDied {
            ShmEvents._emit(ShmEvent(.keyLockHolderDied, key: self.key, operation: operation, detail: "its holder died holding it"))
        }
        return LockToken(key: key, id: grant.id, previousHolderDied: grant.previousHolderDied)
    }

    func _checkCancelled(_ key: String) throws(ShmError) {
        if Task.isCancelled { throw ShmError(.cancelled, _operation("lock", key), detail: "the task was cancelled") }
    }
}

/// The monotonic instant `duration` from now (negative durations: now).
func _deadline(after duration: Duration) -> UInt64 {
    _saturatingAdd(_monotonicNanoseconds(), UInt64(max(0, _nanoseconds(duration))))
}
