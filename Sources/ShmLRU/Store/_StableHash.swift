// Stable string hashes: the same key gives the same hash in every process and
// every run (Swift's `Hasher` is seeded per process, so it must not be used for
// anything stored in shared memory).

/// FNV-1a over bytes, in the width of `offsetBasis` and `prime`: the one loop of
/// both widths below.
@inline(__always)
func _fnv1a<Hash: FixedWidthInteger & UnsignedInteger, Bytes: Sequence<UInt8>>(
    _ bytes: Bytes, offsetBasis: Hash, prime: Hash
) -> Hash {
    var hash = offsetBasis
    for byte in bytes {
        hash ^= Hash(byte)
        hash &*= prime
    }
    return hash
}

/// FNV-1a, 32 bits, over the key's UTF-8 bytes: the store's record hash.
@inline(__always)
func _fnv1a32<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> UInt32 {
    _fnv1a(bytes, offsetBasis: 0x811C_9DC5, prime: 0x0100_0193)
}

/// FNV-1a, 64 bits, over the key's UTF-8 bytes: a lock slot's key identity.
@inline(__always)
func _fnv1a64<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> UInt64 {
    _fnv1a(bytes, offsetBasis: 0xCBF2_9CE4_8422_2325, prime: 0x0000_0100_0000_01B3)
}

/// The store's key hash (FNV-1a 32 of the UTF-8 key).
func _stableHash(_ key: String) -> UInt32 { _fnv1a32(key.utf8) }
