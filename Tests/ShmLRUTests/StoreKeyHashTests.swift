import CShm
import Glibc
@testable import ShmLRU
import Testing

/// The store's key hashes and its Codable write path after issue 28: the keyed
/// SipHash-1-3 reads a key's tail in at most two unaligned loads (it must give
/// the hashes the byte-wise loop gave: they are stored in shared memory), the
/// decoded cache finds entries by its own seeded table hash, and a Codable write
/// lends the codec's bytes to the store (a store error stays a store error).
@Suite struct StoreKeyHashTests {
    /// SipHash-1-3 as the specification reads: whole 8-byte words, then the last
    /// block built byte by byte (the implementation before issue 28).
    static func referenceSipHash13(_ key: _SipKey, _ bytes: [UInt8]) -> UInt64 {
        func rotl(_ x: UInt64, _ n: UInt64) -> UInt64 { (x << n) | (x >> (64 - n)) }
        var v0 = key.k0 ^ 0x736F_6D65_7073_6575
        var v1 = key.k1 ^ 0x646F_7261_6E64_6F6D
        var v2 = key.k0 ^ 0x6C79_6765_6E65_7261
        var v3 = key.k1 ^ 0x7465_6462_7974_6573
        func round() {
            v0 &+= v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
            v2 &+= v3; v3 = rotl(v3, 16); v3 ^= v2
            v0 &+= v3; v3 = rotl(v3, 21); v3 ^= v0
            v2 &+= v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)
        }
        let whole = bytes.count / 8 * 8
        var offset = 0
        while offset < whole {
            var m: UInt64 = 0
            for i in 0..<8 { m |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
            v3 ^= m
            round()
            v0 ^= m
            offset += 8
        }
        var last = UInt64(bytes.count & 0xFF) << 56
        for i in 0..<(bytes.count - whole) { last |= UInt64(bytes[whole + i]) << (8 * UInt64(i)) }
        v3 ^= last
        round()
        v0 ^= last
        v2 ^= 0xFF
        round()
        round()
        round()
        return v0 ^ v1 ^ v2 ^ v3
    }

    @Test func sipHashTailLoadsGiveTheByteWiseHashes() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            let key = _SipKey.random()
            for length in 0...41 {
                let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                // At the end of an exact allocation: a load past the key's last byte would read outside it.
                let exact = UnsafeMutableRawBufferPointer.allocate(byteCount: max(length, 1), alignment: 1)
                defer { exact.deallocate() }
                exact.copyBytes(from: bytes)
                let lent = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(exact)[0..<length])
                #expect(_sipHash13(key, lent) == Self.referenceSipHash13(key, bytes), "length \(length)")
            }
        }
    }

    /// The key check inside a record's seqlock (`cshm_racy_equal`) compares keys
    /// of 4-16 bytes with overlapping word loads: for every length it must give
    /// memcmp's answer, see a difference in every byte, and read nothing outside
    /// either buffer (both end their allocation exactly).
    @Test func racyKeyCompareGivesMemcmpsAnswerForEveryLengthAndByte() {
        var generator = SystemRandomNumberGenerator()
        for length in 0...41 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let shared = UnsafeMutableRawBufferPointer.allocate(byteCount: max(length, 1), alignment: 1)
            let mine = UnsafeMutableRawBufferPointer.allocate(byteCount: max(length, 1), alignment: 1)
            defer {
                shared.deallocate()
                mine.deallocate()
            }
            shared.copyBytes(from: bytes)
            mine.copyBytes(from: bytes)
            #expect(cshm_racy_equal(shared.baseAddress, mine.baseAddress, length) != 0, "length \(length)")
            for position in 0..<length {
                for flip: UInt8 in [0x01, 0x80] {
                    mine[position] = bytes[position] ^ flip
                    let expected = memcmp(shared.baseAddress!, mine.baseAddress!, length) == 0
                    #expect(!expected)
                    #expect((cshm_racy_equal(shared.baseAddress, mine.baseAddress, length) != 0) == expected, "length \(length), byte \(position)")
                    mine[position] = bytes[position]
                }
            }
        }
    }

    @Test func tableHashIsKeyedPerHandleAndSeesEveryByte() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 128))
            let peer = try ShmStore.attach(key: key)
            defer { try? peer.detach() }
            #expect(store._decoded.tableKey != peer._decoded.tableKey)
            // Every byte of keys of 1-23 bytes (whole words and every tail length) changes the hash.
            for length in 1...23 {
                let base = [UInt8](repeating: 0x61, count: length)
                let hash = base.withUnsafeBytes { store._decoded.tableHash($0) }
                for position in 0..<length {
                    var changed = base
                    changed[position] = 0x62
                    #expect(changed.withUnsafeBytes { store._decoded.tableHash($0) } != hash, "length \(length), byte \(position)")
                }
            }
            // The decoded cache through it: keys of every tail length, decoded once, then hits.
            let keys = (1...23).map { String(repeating: "k", count: $0) }
            for (n, name) in keys.enumerated() { try peer.set(name, n) }
            for (n, name) in keys.enumerated() { #expect(try store.get(name, as: Int.self) == n) }
            for (n, name) in keys.enumerated() { #expect(try store.get(name, as: Int.self) == n) }
            #expect(store.decodedCacheStats.misses == UInt64(keys.count))
            #expect(store.decodedCacheStats.hits == UInt64(keys.count))
            try peer.set("kkk", 1_000)  // a peer's write: the next get decodes again
            #expect(try store.get("kkk", as: Int.self) == 1_000)
            #expect(store.decodedCacheStats.misses == UInt64(keys.count) + 1)
        }
    }

    struct Note: Codable, Equatable {
        var text: String
    }

    /// A codec with only `encode` and `decode`: the default `withEncoded` lends `encode`'s array.
    struct PlainCodec: ShmStoreCodec {
        func encode<Value: Encodable>(_ value: Value) throws -> [UInt8] { [0xC0] + (try JSONStoreCodec().encode(value)) }
        func decode<Value: Decodable>(_ type: Value.Type, from bytes: UnsafeRawBufferPointer) throws -> Value {
            guard bytes.first == 0xC0 else { throw ShmError(.invalidArgument, "PlainCodec.decode") }
            return try JSONStoreCodec().decode(type, from: UnsafeRawBufferPointer(rebasing: bytes[1...]))
        }
    }

    /// A codec whose `withEncoded` fails, or lends nothing.
    struct BrokenCodec: ShmStoreCodec {
        var lendsNothing = false
        func encode<Value: Encodable>(_ value: Value) throws -> [UInt8] { try JSONStoreCodec().encode(value) }
        func decode<Value: Decodable>(_ type: Value.Type, from bytes: UnsafeRawBufferPointer) throws -> Value {
            try JSONStoreCodec().decode(type, from: bytes)
        }
        func withEncoded<Value: Encodable>(_ value: Value, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
            if lendsNothing { return }
            throw ShmError(.invalidArgument, "BrokenCodec.withEncoded")
        }
    }

    @Test func codableWritesLendTheCodecsBytesAndKeepStoreErrors() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 128))
            try store.set("note", Note(text: "short"))
            #expect(try store.bytes("note") == Array(#"{"text":"short"}"#.utf8))
            // Too long for a record: the store's own error, not a coding failure; nothing changed.
            expectShmError(.valueTooLarge) { try store.set("note", Note(text: String(repeating: "x", count: 200))) }
            #expect(try store.get("note", as: Note.self) == Note(text: "short"))
            // A codec without its own withEncoded.
            store.codec = PlainCodec()
            try store.set("plain", Note(text: "p"))
            #expect(try store.bytes("plain")?.first == 0xC0)
            #expect(try store.get("plain", as: Note.self) == Note(text: "p"))
            // A codec that fails, or lends nothing: a coding failure, nothing written.
            store.codec = BrokenCodec()
            expectShmError(.codingFailed) { try store.set("broken", Note(text: "b")) }
            store.codec = BrokenCodec(lendsNothing: true)
            expectShmError(.codingFailed) { try store.set("broken", Note(text: "b")) }
            #expect(try store.bytes("broken") == nil)
            #expect(store.count == 2)
        }
    }
}
