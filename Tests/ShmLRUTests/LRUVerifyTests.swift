import Foundation
@testable import ShmLRU
import Testing

/// `verify()` is only worth running if it notices damage: each kind of damage,
/// written into the segment by hand, is reported; the dump stays valid JSON; and
/// `repair()` brings back a clean structure holding the intact records.
@Suite struct LRUVerifyTests {
    struct Damage: Sendable, CustomTestStringConvertible {
        var name: String
        /// A phrase the report must contain.
        var expected: String
        var testDescription: String { name }
    }

    static let damages = [
        Damage(name: "count", expected: "count is"),
        Damage(name: "next out of range", expected: "out of range"),
        Damage(name: "cycle", expected: "cycle"),
        Damage(name: "prev", expected: ".prev is"),
        Damage(name: "tail", expected: "tail is"),
        Damage(name: "free list cycle", expected: "free list"),
        Damage(name: "free count", expected: "free count"),
        Damage(name: "live record on the free list", expected: "on both lists"),
        Damage(name: "index entry to a free record", expected: "index"),
        Damage(name: "half-written record", expected: "half-written"),
        Damage(name: "length", expected: "claims"),
        Damage(name: "high-water mark", expected: "high-water"),
    ]

    @Test(arguments: damages)
    func verifyReportsDamageAndRepairFixesIt(_ damage: Damage) throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 12)
            var offsets: [UInt32: Int] = [:]
            for hash: UInt32 in 1...10 { offsets[hash] = try cache.set(hash, "value \(hash)").offset }
            try cache.remove(4)
            try cache.remove(7)  // free list: 7 -> 4
            #expect(try cache.verify().isClean)
            let s = cache._segment
            let layout = s.layout
            func slot(_ hash: UInt32) -> UInt32 { layout.slot(atOffset: offsets[hash]!)! }
            switch damage.name {
            case "count": s.count = 9
            case "next out of range": s.setNext(slot(5), 1_000)
            case "cycle": s.setNext(slot(1), s.head)  // the tail (oldest, 1) points back to the head
            case "prev": s.setPrev(slot(5), slot(9))
            case "tail": s.tail = slot(5)
            case "free list cycle": s.setNext(slot(4), slot(7))
            case "free count": s.freeCount = 5
            case "live record on the free list": s.freeHead = slot(3)
            case "index entry to a free record":
                let table = cache._sharedIndex!
                let position = table.find(8)!.position
                table.store(position, table.geometry.entry(mixed: _mix32(8), slot: slot(4)))
            case "half-written record": s.store(layout.recordOffset(slot(6)) + _Layout.R.seq, 1)
            case "length": s.store(layout.recordOffset(slot(6)) + _Layout.R.meta, _Layout.stateLive << 24 | 999)
            case "high-water mark": s.store(_Layout.H.highWater, UInt32(layout.capacity + 5))
            default: Issue.record("unknown damage")
            }
            let report = try cache.verify()
            #expect(!report.isClean)
            #expect(report.problems.contains { $0.contains(damage.expected) }, "\(damage.name): \(report)")
            // The dump walks whatever is there and stays valid JSON.
            for backwards in [false, true] {
                let json = try cache.dumpJSON(backwards: backwards)
                #expect(try JSONSerialization.jsonObject(with: Data(json.utf8)) is [String: Any], "\(json)")
            }
            try cache.repair()
            let after = try cache.verify()
            #expect(after.isClean, "\(damage.name) after repair: \(after)")
            #expect(cache.stats.recoveries >= 1)
            // Records the damage did not touch are intact; the deleted ones stay deleted.
            for hash: UInt32 in [2, 10] { #expect(try cache.string(hash) == "value \(hash)", "\(damage.name)") }
            #expect(try cache.bytes(4) == nil)
            #expect(try cache.bytes(7) == nil)
            // Every record still found reads back its own value.
            for hash: UInt32 in 1...10 {
                if let value = try cache.string(hash) { #expect(value == "value \(hash)") }
            }
            // And the structure works on.
            for hash: UInt32 in 20..<40 { try cache.set(hash, "more \(hash)") }
            #expect(try cache.verify().isClean)
            #expect(cache.count == 12)
        }
    }

    /// An operation that runs into damage repairs it (under the lock) and completes.
    @Test func operationsRepairWhatTheyTripOver() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 8)
            for hash: UInt32 in 1...8 { try cache.set(hash, "v\(hash)") }
            let s = cache._segment
            s.tail = 1_000  // out of range: the next eviction trips over it
            let result = try cache.set(9, "v9")
            #expect(result.evictedHash == 1)
            #expect(cache.stats.recoveries == 1)
            #expect(try cache.verify().isClean)
            #expect(try cache.string(9) == "v9")
        }
    }
}
