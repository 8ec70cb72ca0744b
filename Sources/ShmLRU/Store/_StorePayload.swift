import CShm

// The store record payload: the one owner of its format. A payload lives in an
// ShmLRU record of the data segment and in a change-log entry (its layout map:
// _StoreLayout.swift, "Store record payload"):
//
//   +0 keyLen UInt32 | +4 flags UInt32 | +8 expiresAt UInt64 | +16 maxAge UInt64 | +24 key | value
//
// `_StorePayload` is the one reader: it checks the key length against the
// payload's length once, and every path reads through it: the lock-free reads
// (racy, inside a record's seqlock window: ShmStore+LockFreeRead.swift, the
// snapshot scan) and, through `_PayloadHeader`, the locked paths, the listeners
// and verify. `_StorePayload.write` is the one writer (every set, update, add
// and restore: `withPayload` builds a record's payload on the stack, `make` in
// an array), `storeExpiry` the one in-place rewrite (a renewing get).
//
// Its loads are relaxed atomics: under the lock they cost what plain loads do,
// and without it they are the racy reads the seqlock then confirms or discards.

/// A store record payload of `count` bytes at `base`, its key length checked.
struct _StorePayload {
    let base: UnsafeRawPointer
    let count: Int
    /// <= count - 24.
    let keyLength: Int

    /// nil when `count` bytes cannot be a store payload: shorter than its header,
    /// or a key longer than what follows the header.
    @inline(__always)
    init?(_ base: UnsafeRawPointer, count: Int) {
        let keyLength = Int(cshm_load_relaxed_u32(_StorePayload.word(base, _StoreLayout.P.keyLength)))
        guard count >= _StoreLayout.payloadHeaderSize, keyLength <= count &- _StoreLayout.payloadHeaderSize else { return nil }
        self.base = base
        self.count = count
        self.keyLength = keyLength
    }

    @inline(__always)
    init?(_ payload: UnsafeRawBufferPointer) {
        guard let base = payload.baseAddress else { return nil }
        self.init(base, count: payload.count)
    }

    /// `_StoreLayout.payloadSpilled` and reserved bits.
    @inline(__always) var flags: UInt32 { cshm_load_relaxed_u32(_StorePayload.word(base, _StoreLayout.P.flags)) }
    /// CLOCK_MONOTONIC ns; 0: never.
    @inline(__always) var expiresAt: UInt64 { cshm_load_relaxed_u64(_StorePayload.word64(base, _StoreLayout.P.expiresAt)) }
    /// The age a renewing get restores (ns; 0: none).
    @inline(__always) var maxAge: UInt64 { cshm_load_relaxed_u64(_StorePayload.word64(base, _StoreLayout.P.maxAge)) }

    /// The key's bytes.
    @inline(__always) var key: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + _StoreLayout.P.key, count: keyLength)
    }
    /// The value's bytes (for a spilled value, its heap descriptor).
    @inline(__always) var value: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(
            start: base + _StoreLayout.P.key + keyLength, count: count &- _StoreLayout.payloadHeaderSize &- keyLength)
    }
    /// The header and the key without the value: what the change log keeps of a
    /// removed, expired or evicted entry.
    @inline(__always) var keyed: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base, count: _StoreLayout.P.key + keyLength)
    }

    /// Whether the stored key is `key`, compared racily (a lock-free reader
    /// keeps the answer only if its record is unchanged after).
    @inline(__always)
    func hasKey(_ key: UnsafeRawBufferPointer) -> Bool {
        keyLength == key.count && (keyLength == 0 || cshm_racy_equal(base + _StoreLayout.P.key, key.baseAddress, keyLength) != 0)
    }

    /// The payload's bytes for a header, key and value, in an array.
    static func make(
        key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, expiresAt: UInt64, maxAge: UInt64, flags: UInt32 = 0
    ) -> [UInt8] {
        let count = size(key: key, value: value)
        return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            write(UnsafeMutableRawBufferPointer(buffer), key: key, value: value, expiresAt: expiresAt, maxAge: maxAge, flags: flags)
            initialized = count
        }
    }

    /// Lends the payload's bytes for a header, key and value to `body`, built in
    /// a buffer on the stack (the write path: no array to allocate and free).
    @inline(__always)
    static func withPayload<R>(
        key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, expiresAt: UInt64, maxAge: UInt64,
        _ body: (UnsafeRawBufferPointer) throws(ShmError) -> R
    ) throws(ShmError) -> R {
        let count = size(key: key, value: value)
        return try withUnsafeTemporaryAllocation(byteCount: count, alignment: 8) { buffer in
            write(buffer, key: key, value: value, expiresAt: expiresAt, maxAge: maxAge, flags: 0)
            return Result { () throws(ShmError) -> R in try body(UnsafeRawBufferPointer(buffer)) }
        }.get()
    }

    /// The size of the payload of `key` and `value`.
    @inline(__always)
    static func size(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> Int {
        _StoreLayout.payloadHeaderSize + key.count + value.count
    }

    /// Writes the payload of a header, key and value into `raw` (`size` bytes): the one writer.
    @inline(__always)
    static func write(
        _ raw: UnsafeMutableRawBufferPointer, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, expiresAt: UInt64,
        maxAge: UInt64, flags: UInt32
    ) {
        guard let base = raw.baseAddress else { return }
        base.storeBytes(of: UInt32(key.count), toByteOffset: _StoreLayout.P.keyLength, as: UInt32.self)
        base.storeBytes(of: flags, toByteOffset: _StoreLayout.P.flags, as: UInt32.self)
        base.storeBytes(of: expiresAt, toByteOffset: _StoreLayout.P.expiresAt, as: UInt64.self)
        base.storeBytes(of: maxAge, toByteOffset: _StoreLayout.P.maxAge, as: UInt64.self)
        if let source = key.baseAddress, key.count > 0 {
            (base + _StoreLayout.P.key).copyMemory(from: source, byteCount: key.count)
        }
        if let source = value.baseAddress, value.count > 0 {
            (base + _StoreLayout.P.key + key.count).copyMemory(from: source, byteCount: value.count)
        }
    }

    /// Rewrites the expiry of the payload at `payload` in place (inside its
    /// record's seqlock, under the data lock: `ShmLRU._LockedHandle.rewritePayload`).
    static func storeExpiry(_ expiresAt: UInt64, at payload: UnsafeMutableRawPointer) {
        cshm_store_relaxed_u64((payload + _StoreLayout.P.expiresAt).assumingMemoryBound(to: UInt64.self), expiresAt)
    }

    @inline(__always)
    static func word(_ base: UnsafeRawPointer, _ offset: Int) -> UnsafeMutablePointer<UInt32> {
        UnsafeMutableRawPointer(mutating: base + offset).assumingMemoryBound(to: UInt32.self)
    }
    @inline(__always)
    static func word64(_ base: UnsafeRawPointer, _ offset: Int) -> UnsafeMutablePointer<UInt64> {
        UnsafeMutableRawPointer(mutating: base + offset).assumingMemoryBound(to: UInt64.self)
    }
}

/// The header of a payload read under a lock (or from a copy), its fields taken
/// once through `_StorePayload`.
struct _PayloadHeader {
    var keyLength: Int
    /// `_StoreLayout.payloadSpilled` and reserved bits.
    var flags: UInt32
    var expiresAt: UInt64
    var maxAge: UInt64

    /// Parses the header of `payload`; nil if it does not fit.
    static func read(_ payload: UnsafeRawBufferPointer) -> _PayloadHeader? {
        guard let stored = _StorePayload(payload) else { return nil }
        return _PayloadHeader(keyLength: stored.keyLength, flags: stored.flags, expiresAt: stored.expiresAt, maxAge: stored.maxAge)
    }

    /// The key bytes of a payload whose header is `self`.
    func key(in payload: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: payload[_StoreLayout.P.key..<_StoreLayout.P.key + keyLength])
    }
    func value(in payload: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: payload[(_StoreLayout.P.key + keyLength)...])
    }
    /// The header and key of a payload whose header is `self` (see `_StorePayload.keyed`).
    func keyed(in payload: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: payload[0..<(_StoreLayout.P.key + keyLength)])
    }
    func isExpired(now: UInt64) -> Bool { expiresAt != 0 && expiresAt <= now }
}
