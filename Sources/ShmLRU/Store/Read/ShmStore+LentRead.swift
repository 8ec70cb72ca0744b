import CShm

// Lent reads: `withBytes(_:_:)` lends the value to a closure without allocating,
// and `bytes(_:)` / `bytes(_:into:)` share its lock-free copy.
//
// The contract of a lent read: the body sees one whole version of the value,
// never torn bytes and never another key's. A lock-free read cannot lend the
// segment's bytes themselves (a writer may rewrite the record while the body
// runs, and the body's work cannot be undone on a retry), so the value is
// copied inside the record's seqlock window (`_readLockFree`: the copy is kept
// only if the record's sequence was even and unchanged around it) into a
// buffer on the caller's stack (`_lendStackBytes`, a constant, so the buffer is
// a plain stack allocation: no malloc, no thread-local state, re-entrant), and
// the body runs once, after the window, on that copy. A value longer than the
// stack buffer (a large record or a spilled value) and the locked path (exact
// promotion, or writers kept getting in the way) lend one array of the value's
// length, read by `bytes(_:)`. `withBytes` is inlinable, so it is specialised
// in the caller; what it calls (`_lend`) is not generic.
//
// `bytes(_:)` copies into the same stack buffer and makes its array after the
// window, so a retried read allocates nothing and a hit allocates exactly one
// array, of the value's length.

/// The stack buffer of a lent read, in bytes (`withBytes` spells it as a
/// literal: a constant, so that `withUnsafeTemporaryAllocation` is a plain
/// stack allocation).
let _lendStackBytes = 1_024
/// `_lend`'s results other than a length.
@usableFromInline let _lendAbsent = -1
@usableFromInline let _lendElsewhere = -2

extension ShmStore {
    /// Lends the bytes stored under `key` to `body` and returns its result; nil
    /// (and `body` not called) when the key is absent or expired. A hit is a use,
    /// as for `bytes(_:)`.
    ///
    /// `body` runs once, on a consistent copy of one version of the value (never
    /// torn, never another key's): with interval promotion the copy is made
    /// lock-free into a buffer on the stack (no allocation for a value of up to
    /// 1 KiB); a longer value, or a read under the lock (exact promotion, or
    /// writers kept getting in the way), is lent from one array of its length.
    /// The buffer is valid only during `body`: do not keep it. A write by
    /// another process while `body` runs is not seen by it.
    /// - Throws: `.detached` after `detach()`, the locked read's errors, and
    ///   whatever `body` throws.
    @inlinable  // specialised in the caller: the stack buffer is then a plain stack allocation, the body a direct call
    public func withBytes<R>(_ key: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R? {
        // 1024: `_lendStackBytes`, spelt as a literal so that the size is a constant in the caller.
        try withUnsafeTemporaryAllocation(byteCount: 1_024, alignment: 16) { stack -> R? in
            let count = try _lend(key, into: stack)
            if count >= 0 { return try body(UnsafeRawBufferPointer(rebasing: stack[0..<count])) }
            if count == _lendAbsent { return nil }
            guard let value = try bytes(key) else { return nil }  // long, or under the lock: one array
            return try value.withUnsafeBytes(body)
        }
    }

    /// `withBytes`' lock-free read into the caller's stack buffer: the value's
    /// length, `_lendAbsent` when the key is absent or expired, or
    /// `_lendElsewhere` when the value is longer than `buffer` or the read must
    /// take the lock (then `bytes(_:)` reads it). Not generic: the lent read
    /// does nothing generic.
    @usableFromInline
    func _lend(_ key: String, into buffer: UnsafeMutableRawBufferPointer) throws(ShmError) -> Int {
        guard cache._lockFreeView.isAttached else { throw _detachedError("get", key) }
        guard _readsLockFree else { return _lendElsewhere }
        switch _copyRead(key, into: buffer) {
        case .copied(let count): return count
        case .miss: return _lendAbsent
        case .tooSmall, .locked: return _lendElsewhere
        }
    }

    /// What a lock-free copy read (`_copyRead`) did.
    enum _CopyRead {
        /// The value's length; its bytes are in the buffer.
        case copied(Int)
        case miss
        /// The value is this long, longer than the buffer: nothing was copied.
        case tooSmall(Int)
        /// Writers kept getting in the way, or the read must write: take the lock.
        case locked
    }

    /// One lock-free read of `key` into `buffer`, a hit counted and its record
    /// marked used: the lean attempt first (`_copyOnce`: a live entry without
    /// an expiry, no view, no closure), then, with the same key bytes and hash,
    /// the general one (`_copyGeneral`: expiry, renewal, spilled values,
    /// retries), out of line so that the lean attempt keeps its registers.
    ///
    /// A key of up to 16 bytes (`_InlineKey`) is read out of the String once,
    /// in a closure that does nothing else, into a 16-byte copy on the stack,
    /// and the read runs on that copy in the caller's own code. (A closure that
    /// did the whole read was outlined by the compiler, because the standard
    /// library applies it from two places, small and large strings: a call's
    /// prologue and epilogue per read, measured ~25 instructions.) A longer key
    /// is lent from the String's storage as before.
    @inline(__always)
    func _copyRead(_ key: String, into buffer: UnsafeMutableRawBufferPointer) -> _CopyRead {
        if let inline = key.utf8.withContiguousStorageIfAvailable({ _InlineKey(UnsafeRawBufferPointer($0)) }), inline.isInline {
            return withUnsafeBytes(of: (inline.w0.littleEndian, inline.w1.littleEndian)) { words -> _CopyRead in
                let keyBuffer = UnsafeRawBufferPointer(rebasing: words[0..<Int(inline.count)])
                return _copyRead(keyBuffer, base: _keyHash(key, keyBuffer), into: buffer)
            }
        }
        return _withKeyLent(key) { keyBuffer, base -> _CopyRead in _copyRead(keyBuffer, base: base, into: buffer) }
    }

    /// `_copyRead` of the key's bytes and probe base hash.
    @inline(__always)
    func _copyRead(_ keyBuffer: UnsafeRawBufferPointer, base: UInt32, into buffer: UnsafeMutableRawBufferPointer) -> _CopyRead {
        switch _copyOnce(keyBuffer, base: base, into: buffer) {
        case .hit(let length, let record, let stamp):
            cache._lockFreeView.noteHit(record, stamp: stamp)
            return .copied(length)
        case .miss:
            cache._lockFreeView.noteMiss()
            return .miss
        case .tooSmall(let length): return .tooSmall(length)
        case .elsewhere: return _copyGeneral(keyBuffer, base: base, into: buffer)
        }
    }

    /// `_copyRead`'s general attempt (`_readLockFree`, with retries).
    @inline(never)
    func _copyGeneral(_ keyBuffer: UnsafeRawBufferPointer, base: UInt32, into buffer: UnsafeMutableRawBufferPointer) -> _CopyRead {
        let outcome = _readLockFree(keyBuffer, base: base, use: true) { view -> Int? in
            if view.flags & _StoreLayout.payloadSpilled != 0, let heap = _heap { return _copySpilled(heap, view, into: buffer) }
            let count = view.value.count
            guard count <= buffer.count else { return -count }  // count > 0 here
            if count > 0 { cshm_racy_copy(buffer.baseAddress, view.value.baseAddress, count) }
            return count
        }
        switch outcome {
        case .hit(let count, _)?: return count >= 0 ? .copied(count) : .tooSmall(-count)
        case .miss?: return .miss
        case .contended?, .needsLock?, nil: return .locked
        }
    }

    /// What `bytes(_:)`'s lock-free attempt found.
    enum _BytesOutcome {
        case hit([UInt8])
        case miss
        /// Writers kept getting in the way, or the read must write: take the lock.
        case locked
    }

    /// `bytes(_:)`'s lock-free attempt: the value copied inside the seqlock
    /// window into a stack buffer, then into one array of its length (so a retry
    /// allocates nothing); a value longer than the stack buffer is copied into
    /// its array directly.
    @inline(__always)
    func _bytesLockFree(_ key: String) -> _BytesOutcome {
        let small = withUnsafeTemporaryAllocation(byteCount: _lendStackBytes, alignment: 16) { stack -> _BytesOutcome? in
            switch _copyRead(key, into: stack) {
            case .copied(let count): return .hit(Array(UnsafeRawBufferPointer(rebasing: stack[0..<count])))
            case .miss: return .miss
            case .tooSmall: return nil  // longer than the stack buffer
            case .locked: return .locked
            }
        }
        if let small { return small }
        let outcome = _withKeyLent(key) { keyBuffer, base in
            _readLockFree(keyBuffer, base: base, use: true) { view in _copyValue(view) }
        }
        switch outcome {
        case .hit(let bytes, _)?: return .hit(bytes)
        case .miss?: return .miss
        case .contended?, .needsLock?, nil: return .locked
        }
    }
}
