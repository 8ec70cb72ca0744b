@testable import ShmLRU
import ShmLRUTestSupport
import Testing

/// The decoded cache's table after issue 28's cache-line work: one 64-byte line
/// per position, the key kept inline (up to 16 bytes) so that a hit compares it
/// there and reads only the record's header line, and boxes held by references
/// the table counts itself.
@Suite struct StoreDecodedTableTests {
    final class Payload {}

    static func entry(_ box: AnyObject, key: [UInt8], slot: UInt32 = 3, seq: UInt32 = 8) -> _DecodedCache.Entry {
        let inline = key.withUnsafeBytes { _InlineKey($0) }
        return _DecodedCache.Entry(
            slot: slot, seq: seq, recordHash: 1, expiresAt: 0, renews: false, type: ObjectIdentifier(Int.self), value: box,
            key: inline, cost: 10, order: 0)
    }

    @Test func aPositionIsOneCacheLine() {
        #expect(MemoryLayout<_DecodedLine>.stride == 64)
        #expect(MemoryLayout<_DecodedLine>.size <= 64)
    }

    /// Two keys of up to 16 bytes have equal inline forms exactly when they are
    /// the same bytes; a longer key is represented by its length only.
    @Test func inlineKeysAreEqualExactlyWhenTheBytesAre() {
        var generator = SystemRandomNumberGenerator()
        for length in 0...16 {
            let key = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let inline = key.withUnsafeBytes { _InlineKey($0) }
            #expect(inline.isInline && inline.count == UInt32(length))
            #expect(key.withUnsafeBytes { _InlineKey($0) } == inline)
            for position in 0..<length {
                for bit in 0..<8 {
                    var other = key
                    other[position] ^= 1 << bit
                    #expect(other.withUnsafeBytes { _InlineKey($0) } != inline, "length \(length), byte \(position), bit \(bit)")
                }
            }
            if length < 16 {
                let longer = key + [0]  // a trailing zero byte is not the padding
                #expect(longer.withUnsafeBytes { _InlineKey($0) } != inline)
            }
        }
        let long = [UInt8](repeating: 7, count: 17)
        #expect(!long.withUnsafeBytes { _InlineKey($0) }.isInline)
    }

    /// The table hash of a key's inline form is its table hash (the hit takes
    /// the one, the miss path the other: they must find the same entry).
    @Test func theInlineTableHashIsTheTableHash() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let seed = _SipKey.random()
            for length in 0...16 {
                let key = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                key.withUnsafeBytes { bytes in
                    #expect(_tableHash(seed, inline: _InlineKey(bytes)) == _tableHash(seed, bytes), "length \(length)")
                }
            }
        }
    }

    /// A hit on an entry of another key of the same table hash fails before the
    /// record is looked at; the entry's own key is compared inline (the record
    /// check is told not to compare it again); a key longer than 16 bytes is
    /// left to the record check.
    @Test func aHitComparesTheInlineKeyAndLeavesLongKeysToTheRecord() {
        let cache = _DecodedCache()
        let box = _DecodedBox(42)
        let owner = Array("user:00000000042".utf8)
        let other = Array("user:00000000043".utf8)
        cache.insert(9, Self.entry(box, key: owner))
        var checks: [(UInt32, UInt32, Bool)] = []
        var taken: [Int] = []
        func hit(_ key: [UInt8], hash: UInt32 = 9, unchanged: Bool = true) -> Bool {
            key.withUnsafeBytes { bytes in
                cache.hit(
                    hash, asked: _InlineKey(bytes), type: ObjectIdentifier(Int.self),
                    { slot, seq, keyChecked in
                        checks.append((slot, seq, keyChecked))
                        return unchanged
                    }, { taken.append($0.value(as: Int.self)) })
            }
        }
        #expect(!hit(other))
        #expect(checks.isEmpty, "another key of the same hash never reaches the record check")
        #expect(hit(owner))
        #expect(checks.count == 1 && checks[0] == (3, 8, true) && taken == [42])
        #expect(!hit(owner, unchanged: false))
        #expect(taken == [42])
        #expect(!hit(owner, hash: 10))

        let long = Array("user:000000000000000042".utf8)
        cache.insert(11, Self.entry(_DecodedBox(7), key: long, slot: 5, seq: 2))
        checks = []
        #expect(hit(long, hash: 11))
        #expect(checks.count == 1 && checks[0] == (5, 2, false), "a long key is compared in the record")
        #expect(!hit(Array(long.dropLast()), hash: 11))
        #expect(checks.count == 1, "a key of another length never reaches the record check")
    }

    /// Entries stay findable through insertions, replacements and backward-shift
    /// removals in crowded runs, and every box is released when its entry is
    /// replaced or removed, when the cache is cleared, and when it goes.
    @Test func theTableKeepsFindsAndReleasesItsBoxes() {
        var weak: [UInt32: () -> AnyObject?] = [:]
        var cache: _DecodedCache? = _DecodedCache(limits: .init(maxEntries: 10_000, maxBytes: 1 << 30))
        // Hashes that share homes (multiples of a large power of two land together).
        let hashes = (0..<300).map { UInt32($0) &* 0x0100_0000 &+ UInt32($0 % 3) }
        for hash in hashes {
            let payload = Payload()
            weak[hash] = { [weak payload] in payload }
            cache!.insert(hash, Self.entry(payload, key: Array("k\(hash)".utf8)))
        }
        for hash in hashes { #expect(cache!.entry(hash, type: ObjectIdentifier(Int.self))?.value === weak[hash]!()) }
        // Replace one, remove every other one.
        let replaced = hashes[1]
        let oldBox = weak[replaced]!
        do {
            let newPayload = Payload()
            cache!.insert(replaced, Self.entry(newPayload, key: Array("k\(replaced)".utf8)))
            weak[replaced] = { [weak newPayload] in newPayload }
        }
        #expect(oldBox() == nil, "a replaced entry's box is released")
        #expect(weak[replaced]!() != nil, "the new box is held")
        for (n, hash) in hashes.enumerated() where n % 2 == 0 { cache!.remove(hash) }
        for (n, hash) in hashes.enumerated() {
            let found = cache!.entry(hash, type: ObjectIdentifier(Int.self))
            if n % 2 == 0 {
                #expect(found == nil)
                #expect(weak[hash]!() == nil, "a removed entry's box is released")
            } else {
                #expect(found?.value === weak[hash]!())
            }
        }
        #expect(cache!.stats.entries == hashes.count / 2)
        cache!.setLimits(.disabled)
        #expect(weak.values.allSatisfy { $0() == nil }, "clearing releases every box")
        cache!.setLimits(.init())
        do {
            let last = Payload()
            weak[0] = { [weak last] in last }
            cache!.insert(77, Self.entry(last, key: [2]))
        }
        #expect(weak[0]!() != nil, "the box is held")
        cache = nil
        #expect(weak[0]!() == nil, "the table releases its boxes when it goes")
    }

    /// Every read finds keys of every length on both sides of the 16-byte
    /// inline form (the copy reads and the decoded hit read a short key from a
    /// copy of it, a longer one from the String), never a key that differs in
    /// one byte, its last or its first, or is a prefix; and a decoded hit sees a
    /// peer's rewrite.
    @Test func everyReadFindsKeysOfEveryLengthAndNoOther() throws {
        struct Value: Codable, Equatable {
            var n: Int
            var text: String
        }
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 512, recordSize: 256))
            let peer = try ShmStore.attach(key: key)
            var keys: [String] = []
            for length in 1...40 {
                keys.append(String(repeating: "k", count: length - 1) + "x")
                if length >= 2 { keys.append("é" + String(repeating: "a", count: length - 2)) }  // multi-byte UTF-8, `length` bytes
            }
            for (n, k) in keys.enumerated() { try store.set(k, Value(n: n, text: "v\(n)")) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 16)
            defer { buffer.deallocate() }
            for (n, k) in keys.enumerated() {
                let stored = try #require(try store.bytes(k))
                #expect(try store.bytes(k, into: buffer) == stored.count, "\(k.utf8.count) bytes")
                #expect(Array(buffer.prefix(stored.count)) == stored)
                #expect(try store.withBytes(k) { Array($0) } == stored)
                #expect(try store.get(k, as: Value.self) == Value(n: n, text: "v\(n)"))
                #expect(try store.get(k, as: Value.self) == Value(n: n, text: "v\(n)"), "the decoded hit")
                var others = [k + "z", "z" + k]
                others.append(String(k.dropLast()) + "y")
                if k.utf8.count > 1 { others.append(String(k.dropLast())) }
                for other in others where !keys.contains(other) {
                    #expect(try store.bytes(other) == nil, "\(other)")
                    #expect(try store.bytes(other, into: buffer) == nil)
                    #expect(try store.withBytes(other) { $0.count } == nil)
                    #expect(try store.get(other, as: Value.self) == nil)
                }
            }
            for (n, k) in keys.enumerated() { try peer.set(k, Value(n: -n, text: "w")) }
            for (n, k) in keys.enumerated() {
                #expect(try store.get(k, as: Value.self) == Value(n: -n, text: "w"), "a peer's rewrite, \(k.utf8.count) bytes")
            }
            try peer.detach()
            try store.detach()
        }
    }
}
