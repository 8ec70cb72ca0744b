import CShm

// How a keyed operation holds its key: every read and every write of the store
// gets the key's UTF-8 bytes lent from the String's own storage (no copy for a
// native string) and its probe base hash computed from those bytes, through
// `_withKey` (throwing paths) or `_withKeyLent` (the lock-free hit paths, which
// build no `Result`). Nothing copies a key into an array to find its record.

extension ShmStore {
    /// The key's hash, from its UTF-8 bytes (no copy), or from the replaceable hash.
    @inline(__always)
    func _keyHash(_ key: String, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        _usesStableHash ? _storeKeyHash(_hashSeed, bytes) : _hash(key)
    }

    /// Lends `key`'s UTF-8 bytes and its probe base hash to `body`.
    @inline(__always)
    func _withKey<R>(_ key: String, _ body: (UnsafeRawBufferPointer, UInt32) throws(ShmError) -> R) throws(ShmError) -> R {
        try _withKeyBytes(key) { (bytes) throws(ShmError) -> R in try body(bytes, _keyHash(key, bytes)) }
    }

    /// `_withKey` for a body that does not throw (the hot paths).
    @inline(__always)
    func _withKeyLent<R>(_ key: String, _ body: (UnsafeRawBufferPointer, UInt32) -> R) -> R {
        _withKeyBytesLent(key) { bytes in body(bytes, _keyHash(key, bytes)) }
    }
}

/// Lends the UTF-8 bytes of `key` to a body that does not throw (the hot paths:
/// no `Result` to build and copy); see `_withKeyBytes`.
@inline(__always)
func _withKeyBytesLent<R>(_ key: String, _ body: (UnsafeRawBufferPointer) -> R) -> R {
    if let lent = key.utf8.withContiguousStorageIfAvailable({ body(UnsafeRawBufferPointer($0)) }) { return lent }
    var native = key
    native.makeContiguousUTF8()
    return native.withUTF8 { body(UnsafeRawBufferPointer($0)) }
}

/// Lends the UTF-8 bytes of `key` to `body`: the String's own storage when it
/// has one (native strings; a small string is lent from the stack), else a
/// native copy (a bridged string).
@inline(__always)
func _withKeyBytes<R>(_ key: String, _ body: (UnsafeRawBufferPointer) throws(ShmError) -> R) throws(ShmError) -> R {
    let lent = key.utf8.withContiguousStorageIfAvailable { buffer in
        Result { () throws(ShmError) -> R in try body(UnsafeRawBufferPointer(buffer)) }
    }
    if let lent { return try lent.get() }
    var native = key
    native.makeContiguousUTF8()
    return try native.withUTF8 { buffer in Result { () throws(ShmError) -> R in try body(UnsafeRawBufferPointer(buffer)) } }.get()
}
