import CShm
import Glibc
import ShmLRU
import ShmLRUTestSupport
import Testing

/// Hostile and corrupt segments: random bytes, a wrong magic, wrong sizes, links
/// forming cycles or pointing outside, counts that lie. Each gives a typed error
/// at attach or a `verify()` report, never a crash or an out-of-bounds access,
/// and `repair()` always brings back a structure that verifies clean.
@Suite(.serialized) struct CorruptionTests {
    /// Not a page multiple (but 8-aligned): the kernel maps whole pages, so the fuzz target can
    /// poison the slack after the segment and catch a read past its real size.
    static let regionBytes = 8_088

    func withHarness(_ body: (_CorruptionHarness, ShmRegion) throws -> Void) throws {
        try withKey { key in
            let region = try ShmRegion.create(key: key, byteCount: Self.regionBytes)
            try body(try _CorruptionHarness(region: region), region)
        }
    }

    /// The seeded mutator: a few thousand inputs, all through the real attach path.
    @Test func seededMutator() throws {
        let inputs = relStress ? 50_000 : 4_000
        let seed = UInt64.random(in: 1...UInt64.max)
        try withHarness { harness, _ in
            var random = SplitMix64(seed: seed)
            var rejected: [String: Int] = [:]
            var attachedClean = 0, attachedReported = 0
            for index in 0..<inputs {
                var input: [UInt8]
                switch index % 8 {
                case 0:  // random bytes over the whole segment
                    input = [UInt8.random(in: 0...255, using: &random) & 0xF3 | 0x08]
                        + (0..<Self.regionBytes).map { _ in UInt8.random(in: 0...255, using: &random) }
                case 1:  // a valid header with random bytes after a random offset
                    input = [UInt8.random(in: 0...255, using: &random) | 0x0C]
                        + (0..<Int.random(in: 2...600, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
                default:  // 1...12 structured patches
                    input = [UInt8.random(in: 0...255, using: &random) & 0xF3]
                        + (0..<(7 * Int.random(in: 1...12, using: &random))).map { _ in UInt8.random(in: 0...255, using: &random) }
                }
                let outcome = input.withUnsafeBytes { bytes in
                    Result { () throws(_CorruptionHarness.Finding) in try harness.run(bytes) }
                }
                switch outcome {
                case .success(.rejected(let code)): rejected[code.rawValue, default: 0] += 1
                case .success(.attached(let clean)): if clean { attachedClean += 1 } else { attachedReported += 1 }
                case .failure(let finding):
                    Issue.record("input \(index) (seed \(seed)): \(finding); input prefix \(input.prefix(40))")
                }
            }
            relReport(
                "seeded mutator (seed \(seed)): \(inputs) inputs over \(harness.shapes.count) shapes, 0 crashes; "
                    + "rejected at attach \(rejected), attached and verify() reported problems \(attachedReported), "
                    + "attached clean \(attachedClean); every repair() verified clean")
            #expect(attachedReported > 0 && !rejected.isEmpty, "the mutator should reach both outcomes")
        }
    }

    // MARK: Attach

    @Test func wrongMagicAndVersionAreIncompatible() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 8)
            try cache.region.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(0x1234), toByteOffset: 0, as: UInt64.self) }
            #expect(throws: ShmError.self) { try ShmLRU.attach(key: key) }
            do throws(ShmError) { _ = try ShmLRU.attach(key: key) } catch { #expect(error.code == .incompatibleSegment) }
        }
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 8)
            try cache.region.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(99), toByteOffset: 8, as: UInt32.self) }
            do throws(ShmError) { _ = try ShmLRU.attach(key: key); Issue.record("attached a layout version 99") } catch {
                #expect(error.code == .incompatibleSegment)
            }
        }
    }

    /// Security default: attach never trusts the header's sizes over the kernel's.
    @Test func headerClaimingMoreThanTheSegmentIsRefused() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 32, capacity: 10)
            // A header consistent with itself for 1,000 records (offsets and all, by
            // _Layout's formulas), in a 10-record segment.
            let slots = 2_000, bits = 10, stride = 64
            let recordsOffset = (512 + slots * 4 + 63) & ~63
            let total = recordsOffset + 1_000 * stride
            try cache.region.withUnsafeMutableBytes { bytes in
                bytes.storeBytes(of: UInt32(1_000), toByteOffset: 24, as: UInt32.self)
                bytes.storeBytes(of: UInt32(slots), toByteOffset: 40, as: UInt32.self)
                bytes.storeBytes(of: UInt32(bits), toByteOffset: 44, as: UInt32.self)
                bytes.storeBytes(of: UInt64(recordsOffset), toByteOffset: 48, as: UInt64.self)
                bytes.storeBytes(of: UInt64(total), toByteOffset: 56, as: UInt64.self)
                bytes.storeBytes(of: UInt64(recordsOffset), toByteOffset: 392, as: UInt64.self)  // ghost offset (none under LRU)
            }
            #expect(cache.region.byteCount < total)
            do throws(ShmError) { _ = try ShmLRU.attach(key: key); Issue.record("attached a header claiming \(total) bytes") } catch {
                #expect(error.code == .corrupted)
                #expect(error.detail?.contains("claims \(total) bytes") == true, "\(error)")
            }
        }
    }

    @Test func segmentSmallerThanAHeaderIsIncompatible() throws {
        try withKey { key in
            _ = try ShmRegion.create(key: key, byteCount: 100)
            do throws(ShmError) { _ = try ShmLRU.attach(key: key); Issue.record("attached 100 bytes") } catch {
                #expect(error.code == .incompatibleSegment)
            }
        }
    }

    /// Security default: segments are 0600 unless asked.
    @Test func segmentsAreOwnerOnlyUnlessAsked() throws {
        func mode(_ region: ShmRegion) -> UInt32 {
            var ds = shmid_ds()
            #expect(shmctl(region.id, IPC_STAT, &ds) == 0)
            return UInt32(ds.shm_perm.mode) & 0o777
        }
        try withKey { key in
            let region = try ShmLRU.create(key: key, recordSize: 8, capacity: 4).region
            #expect(mode(region) == 0o600)
        }
        try withKey { key in
            let region = try ShmRegion.create(key: key, byteCount: 64)
            #expect(mode(region) == 0o600)
        }
        try withKey { key in
            let region = try ShmLRU.create(key: key, recordSize: 8, capacity: 4, permissions: 0o640).region
            #expect(mode(region) == 0o640)
        }
    }

    // MARK: The lock

    // Forged lock words (the lock's owner word): see SegmentLockTests.

    // MARK: Links and counts

    /// A cache whose structure is broken by `damage`: verify() reports it (matching
    /// `expected`), operations give typed errors or work, repair() restores a clean
    /// structure and keeps every live record.
    func damaged(
        _ kind: ShmLRU.IndexKind = .shared, expected: String, dropped: Set<UInt32> = [], _ damage: (UnsafeMutableRawBufferPointer, RelLayout) -> Void)
        throws
    {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 8, index: kind)
            for hash in UInt32(1)...6 { try cache.set(hash, encodeValue(hash: hash, version: 1, length: 16)) }
            try cache.remove(6)
            try cache.region.withUnsafeMutableBytes { damage($0, RelLayout($0)) }
            let report = try cache.verify()
            #expect(!report.isClean)
            #expect(report.problems.contains { $0.contains(expected) }, "expected '\(expected)' in \(report)")
            try cache.repair()
            #expect(try cache.verify().isClean)
            for hash in UInt32(1)...5 {
                let version = try cache.bytes(hash).flatMap { decodeValue($0, hash: hash) }
                #expect(version == (dropped.contains(hash) ? nil : 1), "hash \(hash) after repair: \(String(describing: version))")
            }
            _ = try cache.set(9, "after")
            #expect(try cache.verify().isClean)
        }
    }

    func word(_ bytes: UnsafeMutableRawBufferPointer, _ offset: Int, _ value: UInt32) {
        bytes.storeBytes(of: value, toByteOffset: offset, as: UInt32.self)
    }

    @Test func lruCycle() throws {
        // head is the last set (5); point the tail's next back at the head.
        try damaged(expected: "cycle") { b, l in
            let tail = b.load(fromByteOffset: 140, as: UInt32.self)
            word(b, l.recordOffset(tail) + 4, b.load(fromByteOffset: 136, as: UInt32.self))
        }
    }

    @Test func linkOutOfRange() throws {
        try damaged(expected: "out of range") { b, l in word(b, l.recordOffset(4) + 4, 1_000_000) }
        try damaged(.processLocal, expected: "out of range") { b, _ in word(b, 136, 77) }
    }

    @Test func freeListCycle() throws {
        try damaged(expected: "free list revisits") { b, l in
            let free = b.load(fromByteOffset: 132, as: UInt32.self)
            word(b, l.recordOffset(free) + 4, free)
        }
    }

    @Test func countsThatLie() throws {
        try damaged(expected: "count is") { b, _ in word(b, 128, 0xFFFF_FFFF) }
        try damaged(expected: "free count is") { b, _ in word(b, 144, 3) }
        try damaged(expected: "high-water") { b, _ in word(b, 168, 0xFFFF_FFF0) }
    }

    @Test func indexEntryPointingOutside() throws {
        try damaged(expected: "not a live record") { b, l in word(b, l.indexOffset, 0xFFFF_FFFF) }
    }

    @Test func lengthPastTheRecord() throws {
        // Slot 2 holds hash 3: a record claiming more than it holds is dropped by repair.
        try damaged(expected: "claims", dropped: [3]) { b, l in word(b, l.recordOffset(2) + 20, 1 << 24 | 0xFF_FFFF) }
    }
}

/// Offsets read from a valid header (see _Layout.swift).
struct RelLayout {
    let indexOffset: Int
    let recordsOffset: Int
    let stride: Int
    init(_ header: UnsafeMutableRawBufferPointer) {
        indexOffset = Int(header.load(fromByteOffset: 32, as: UInt64.self))
        recordsOffset = Int(header.load(fromByteOffset: 48, as: UInt64.self))
        stride = Int(header.load(fromByteOffset: 20, as: UInt32.self))
    }
    func recordOffset(_ slot: UInt32) -> Int { recordsOffset + Int(slot) * stride }
}

