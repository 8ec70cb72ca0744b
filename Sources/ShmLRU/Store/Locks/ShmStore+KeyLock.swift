import Synchronization

// A key's lock bound once (issue 27: an uncontended lock + unlock within a few
// CAS pairs). `ShmStore.lock(_:)` finds the key's lock slot on every call: it
// hashes the key, probes the table and compares the key's bytes, most of the
// cost of an uncontended lock + unlock. A `KeyLock` keeps the slot it found and
// the slot's binding generation (a seqlock, moved on by every bind and unbind:
// unchanged, the slot is still this key's), so that its lock-free path is the
// generation check and the CAS alone. A stale hint (the slot was unbound to
// make room for other keys) sends the call through the store's own path, which
// binds a slot again; the hint is then refreshed. Waiting, tokens, timeouts,
// cancellation and dead holders are the store's: a `KeyLock`'s tokens and the
// store's `lock` / `unlock` of the same key are interchangeable.

extension ShmStore {
    /// The lock of one key, bound once: the same lock as the store's `lock(key)`,
    /// `blockingLock(key)` and `unlock(key, _)` (tokens are interchangeable), with
    /// an uncontended lock + unlock of a few atomic operations and no key lookup.
    /// Get one with `keyLock(_:)`; keep it as long as the store handle.
    public final class KeyLock: Sendable {
        /// The store whose key lock this is.
        public let store: ShmStore
        /// The key whose lock this is.
        public let key: String
        let identity: _LockTable.Identity
        /// The store's lock table and async waiting (kept here: one load each on
        /// the lock-free path, not two).
        let table: _LockTable
        let waiting: _AsyncLockWaiter
        /// The slot it was last seen bound in (`_LockTable.Hint`; 0: none).
        let hint: Atomic<UInt64>

        init(store: ShmStore, key: String, identity: _LockTable.Identity) {
            self.store = store
            self.key = key
            self.identity = identity
            table = store._locks
            waiting = store._asyncLocks
            hint = Atomic(store._locks.hint(identity))
        }

        /// As `ShmStore.blockingLock(_:timeout:)` for this key.
        @available(*, noasync, message: "blocks the thread while waiting: use the async lock(timeout:)")
        public func blockingLock(timeout: Duration? = nil) throws(ShmError) -> LockToken {
            if timeout == nil || timeout! >= .zero, let token = fastLock() { return token }
            let token = try store.blockingLock(key, timeout: timeout)
            refreshHint()
            return token
        }

        /// As `ShmStore.lock(_:timeout:)` (async) for this key: never blocks a thread.
        /// (Inlinable: an uncontended lock is a synchronous call in the caller's
        /// own async frame, with no frame allocated and no executor hop.)
        @inlinable
        nonisolated(nonsending) public func lock(timeout: Duration? = nil) async throws(ShmError) -> LockToken {
            if let token = _lockWithoutWaiting(timeout) { return token }
            return try await _lockWaiting(timeout: timeout)
        }

        /// The async lock's lock-free try (nil: the store's path decides): not
        /// past callers of this handle queued (FIFO), nor for a negative timeout
        /// (its error). A cancelled task takes a free lock too: cancellation is
        /// checked only on the way to a wait.
        @usableFromInline func _lockWithoutWaiting(_ timeout: Duration?) -> LockToken? {
            guard !waiting.hasQueuedCallers, timeout == nil || timeout! >= .zero else { return nil }
            return fastLock()
        }

        /// The async lock through the store's path (wait, errors), then the hint.
        @usableFromInline func _lockWaiting(timeout: Duration?) async throws(ShmError) -> LockToken {
            let token = try await store.lock(key, timeout: timeout)
            refreshHint()
            return token
        }

        /// As `ShmStore.tryLock(_:)` for this key.
        public func tryLock() throws(ShmError) -> LockToken? {
            try store.tryLock(key)
        }

        /// As `ShmStore.unlock(_:_:)` for this key: one CAS when nobody waits.
        /// - Throws: `.lockNotHeld` for a token of another key, a wrong or a stale one.
        public func unlock(_ token: LockToken) throws(ShmError) {
            if token.key == key, !waiting.hasQueuedCallers, table.releaseFast(hint: hint.load(ordering: .relaxed), id: token.id)
            {
                return
            }
            try store.unlock(key, token)
        }

        /// As `ShmStore.withBlockingLock(_:timeout:_:)` for this key.
        @available(*, noasync, message: "blocks the thread while waiting: use the async withLock(timeout:_:)")
        public func withBlockingLock<R>(timeout: Duration? = nil, _ body: (LockToken) throws -> R) throws -> R {
            let token = try blockingLock(timeout: timeout)
            let result: R
            do { result = try body(token) } catch {
                try? unlock(token)
                throw error
            }
            try unlock(token)
            return result
        }

        /// As `ShmStore.mutex(_:timeout:_:)` (and the async `withLock`) for this key.
        public func withLock<R>(
            timeout: Duration? = nil, isolation: isolated (any Actor)? = #isolation, _ body: (LockToken) async throws -> R
        ) async throws -> R {
            if let token = _lockWithoutWaiting(timeout) {
                return try await store._holding(token, isolation: isolation, body) { () throws(ShmError) in try unlock(token) }
            }
            let reserved = try store._reserveLock(key, timeout: timeout)  // the place in line, in call order
            return try await withTaskExecutorPreference(_LockHandOffExecutor.shared, isolation: isolation) {
                let token = try await store._awaitLock(reserved)
                refreshHint()
                return try await store._holding(token, isolation: isolation, body) { () throws(ShmError) in try unlock(token) }
            }
        }

        /// One lock-free try on the hinted slot (nil: held, waited for, flagged or
        /// a stale hint: the store's path decides).
        @inline(__always) private func fastLock() -> LockToken? {
            guard case .acquired(let grant) = table.acquireFast(hint: hint.load(ordering: .relaxed), me: _ProcessIdentity.current)
            else { return nil }
            ShmEvents._emit(ShmEvent(.keyLockWaited, key: store.key, operation: store._operation("lock", key), waited: .zero))
            return LockToken(key: key, id: grant.id, previousHolderDied: grant.previousHolderDied)
        }

        /// After a lock through the store's path: the slot it is bound in now.
        private func refreshHint() {
            let current = table.hint(identity)
            if current != 0 { hint.store(current, ordering: .relaxed) }
        }
    }

    /// The lock of `key`, bound once (see `KeyLock`): for a key locked often,
    /// such as a hot counter's. Binds the key's lock slot now if it is not yet.
    /// - Throws: `.invalidArgument` for a key longer than the record size; `.full`
    ///   when every lock slot is bound to another key that is held or waited for.
    public func keyLock(_ key: String) throws(ShmError) -> KeyLock {
        let operation = _operation("keyLock", key)
        let identity = try _locks.identity(key, operation)
        if _locks.hint(identity) == 0 {
            // Not bound yet: a try binds the slot (and is released at once if
            // taken). The table mutex busy past the try's bound is no error here:
            // the first lock binds it, and the hint follows.
            do throws(ShmError) {
                if let token = try tryLock(key) { try unlock(key, token) }
            } catch where error.code == .lockTimeout {}
        }
        return KeyLock(store: self, key: key, identity: identity)
    }
}
