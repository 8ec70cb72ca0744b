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

/// FNV-1a, 32 bits, over the key's UTF-8 bytes: the store's record hash before
/// layout version 4 (unseeded: tests craft collisions with it).
@inline(__always)
func _fnv1a32<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> UInt32 {
    _fnv1a(bytes, offsetBasis: 0x811C_9DC5, prime: 0x0100_0193)
}

/// FNV-1a, 64 bits, over the key's UTF-8 bytes: a lock slot's key identity.
@inline(__always)
func _fnv1a64<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> UInt64 {
    _fnv1a(bytes, offsetBasis: 0xCBF2_9CE4_8422_2325, prime: 0x0000_0100_0000_01B3)
}

/// FNV-1a 32 of the UTF-8 key: the unseeded hash stores used before layout
/// version 4 (kept for tests that craft collisions for it).
func _stableHash(_ key: String) -> UInt32 { _fnv1a32(key.utf8) }

// MARK: The store's keyed record hash

// The store's record hash is SipHash-1-3 (Aumasson & Bernstein; the variant
// Rust's and Python's hash tables use) keyed with a random 128-bit seed drawn by
// `create` and kept in the store header (`_StoreLayout.H.hashSeed`): every
// process of one store computes the same hashes, but a client that chooses keys
// (URL paths, user names) cannot compute offline which keys collide, so it cannot
// fill a victim key's probe window (issue 24, item 7). FNV-1a 32, the hash
// before layout version 4, is unseeded: colliding keys were a table lookup away.

/// A SipHash-1-3 key (two 64-bit halves).
struct _SipKey: Equatable, Sendable {
    var k0: UInt64
    var k1: UInt64

    /// A fresh random key (`create`).
    static func random() -> _SipKey {
        var generator = SystemRandomNumberGenerator()
        return _SipKey(k0: generator.next(), k1: generator.next())
    }
}

/// SipHash-1-3 of `bytes` under `key`, 64 bits.
@inline(__always)
func _sipHash13(_ key: _SipKey, _ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var v0 = key.k0 ^ 0x736F_6D65_7073_6575
    var v1 = key.k1 ^ 0x646F_7261_6E64_6F6D
    var v2 = key.k0 ^ 0x6C79_6765_6E65_7261
    var v3 = key.k1 ^ 0x7465_6462_7974_6573
    @inline(__always) func round() {
        v0 &+= v1; v1 = v1.rotl(13); v1 ^= v0; v0 = v0.rotl(32)
        v2 &+= v3; v3 = v3.rotl(16); v3 ^= v2
        v0 &+= v3; v3 = v3.rotl(21); v3 ^= v0
        v2 &+= v1; v1 = v1.rotl(17); v1 ^= v2; v2 = v2.rotl(32)
    }
    let count = bytes.count
    let whole = count & ~7
    var offset = 0
    while offset < whole, let base = bytes.baseAddress {
        let m = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
        v3 ^= m
        round()
        v0 ^= m
        offset &+= 8
    }
    var last = UInt64(truncatingIfNeeded: count) << 56
    if count > whole, let base = bytes.baseAddress { last |= _tailWord(base + whole, count &- whole) }
    v3 ^= last
    round()
    v0 ^= last
    v2 ^= 0xFF
    round()
    round()
    round()
    return v0 ^ v1 ^ v2 ^ v3
}

/// The last 1-7 bytes of a key at `tail`, little-endian in a word, in at most
/// two loads (overlapping when fewer bytes remain than the loads cover: a byte
/// loaded twice lands twice on the same position), never past the end: no
/// byte-wise, bounds-checked loop.
@inline(__always)
func _tailWord(_ tail: UnsafeRawPointer, _ rest: Int) -> UInt64 {
    if rest >= 4 {
        let low = UInt64(UInt32(littleEndian: tail.loadUnaligned(as: UInt32.self)))
        let high = UInt64(UInt32(littleEndian: tail.loadUnaligned(fromByteOffset: rest &- 4, as: UInt32.self)))
        return low | high << (UInt64(truncatingIfNeeded: rest &- 4) &* 8)
    }
    // 1-3 bytes: the first, the middle and the last (the same byte when one remains).
    let mid = rest >> 1
    return UInt64(tail.load(as: UInt8.self))
        | UInt64(tail.load(fromByteOffset: mid, as: UInt8.self)) << (UInt64(truncatingIfNeeded: mid) &* 8)
        | UInt64(tail.load(fromByteOffset: rest &- 1, as: UInt8.self)) << (UInt64(truncatingIfNeeded: rest &- 1) &* 8)
}

// MARK: The decoded cache's table hash

// The decoded cache (_DecodedCache.swift) is a table of this process only: it
// finds its entries by a cheaper hash than the store's SipHash, a folded
// multiply (wyhash's mixing step) of the key's 8-byte words under a random
// 128-bit key drawn per handle. A client that cannot read the process's memory
// cannot choose keys that collide in it, and a collision only costs a decode
// (one entry per hash: colliding keys replace each other, and the record check
// compares the key itself). The store's record hash stays SipHash-1-3: it is
// shared, and the probe window it fills is the flooding target (issue 24).

/// The folded 128-bit product of `a` and `b`.
@inline(__always)
func _foldedMultiply(_ a: UInt64, _ b: UInt64) -> UInt64 {
    let product = a.multipliedFullWidth(by: b)
    return product.high ^ product.low
}

/// The decoded cache's table hash of a key's UTF-8 bytes under `key`.
@inline(__always)
func _tableHash(_ key: _SipKey, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
    let count = bytes.count
    var h = key.k0 ^ UInt64(truncatingIfNeeded: count) &* 0x9E37_79B9_7F4A_7C15
    if let base = bytes.baseAddress {
        let whole = count & ~7
        var offset = 0
        while offset < whole {
            let m = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            h = _foldedMultiply(m ^ key.k1, h ^ 0xE703_7ED1_A0B4_28DB)
            offset &+= 8
        }
        if count > whole { h = _foldedMultiply(_tailWord(base + whole, count &- whole) ^ key.k1, h ^ 0x8EBC_6AF0_9C88_C6E3) }
    }
    h = _foldedMultiply(h ^ key.k0, 0x5899_65CC_7537_4CC3)
    return UInt32(truncatingIfNeeded: h ^ (h >> 32))
}

/// `_tableHash` of a key of at most 16 bytes from its inline form (the same
/// words `_tableHash` loads: a whole first word, then a whole second word or
/// the tail), without reading the key again: the decoded-cache hit builds the
/// inline key anyway. Equal to `_tableHash(key, bytes)` (StoreDecodedTableTests).
@inline(__always)
func _tableHash(_ key: _SipKey, inline k: _InlineKey) -> UInt32 {
    let count = Int(truncatingIfNeeded: k.count)
    var h = key.k0 ^ UInt64(truncatingIfNeeded: count) &* 0x9E37_79B9_7F4A_7C15
    if count >= 8 {
        h = _foldedMultiply(k.w0 ^ key.k1, h ^ 0xE703_7ED1_A0B4_28DB)
        if count == 16 {
            h = _foldedMultiply(k.w1 ^ key.k1, h ^ 0xE703_7ED1_A0B4_28DB)
        } else if count > 8 {
            h = _foldedMultiply(k.w1 ^ key.k1, h ^ 0x8EBC_6AF0_9C88_C6E3)
        }
    } else if count > 0 {
        h = _foldedMultiply(k.w0 ^ key.k1, h ^ 0x8EBC_6AF0_9C88_C6E3)
    }
    h = _foldedMultiply(h ^ key.k0, 0x5899_65CC_7537_4CC3)
    return UInt32(truncatingIfNeeded: h ^ (h >> 32))
}

extension UInt64 {
    @inline(__always) fileprivate func rotl(_ n: UInt64) -> UInt64 { (self << n) | (self >> (64 &- n)) }
}

/// The store's record hash of a key's UTF-8 bytes: SipHash-1-3 folded to 32 bits.
///
/// Its cost, measured (callgrind, release, 16-byte keys, issue 28): ~120
/// instructions, six SipRounds of ~14 plus the key set-up, already at the
/// function's floor; that is ~23 % of a lock-free `bytes(key, into:)` or
/// `withBytes` (~497 with the bench's loop) and ~12 % of `bytes(key)`, and
/// nothing of a decoded-cache hit (the per-handle `_tableHash` finds that,
/// ~23). A cheaper keyed hash of short keys (a folded multiply: ~35) would save
/// ~85 of the ~497, not enough
/// for the 1.5× target by itself, and would trade issue 24's PRF-backed
/// defence for one without a security argument, with a layout version: kept.
@inline(__always)
func _storeKeyHash(_ key: _SipKey, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
    let h = _sipHash13(key, bytes)
    return UInt32(truncatingIfNeeded: h ^ (h >> 32))
}

/// The store's record hash of `string`.
func _storeKeyHash(_ key: _SipKey, _ string: String) -> UInt32 {
    var string = string
    return string.withUTF8 { _storeKeyHash(key, UnsafeRawBufferPointer($0)) }
}
