import CShm
import Glibc
import ShmLRU
import Testing

/// Many processes on one segment for a while: afterwards verify() is clean and no
/// entry was lost except by eviction.
///
/// Each helper owns a range of hashes and is their only writer, so it knows what
/// each should hold; every eviction is reported (by `set`'s `evictedHash` or
/// `evict`'s result) and counted per hash in a control region. A hit must be
/// exactly the last value its owner wrote; a miss of a hash believed present must
/// be explained by an eviction after its last set (checked once all helpers have
/// stopped writing). Here the whole is checked too: the evictions counted by the
/// helpers equal the cache's eviction statistic, and count = inserts - deletes -
/// evictions.
@Suite(.serialized) struct SoakTests {
    @Test(arguments: ShmLRU.IndexKind.allCases)
    func shortSoak(kind: ShmLRU.IndexKind) throws {
        try soak(processes: 4, seconds: 2, kind: kind)
    }

    /// `make stress`: 8 processes x 60 s.
    @Test(.enabled(if: relStress)) func soak8x60() throws {
        try soak(processes: 8, seconds: 60, kind: .shared)
    }

    func soak(processes: Int, seconds: Int, kind: ShmLRU.IndexKind) throws {
        let perProcess = 256
        let capacity = 1_024  // < processes x perProcess from 4 up: the cache keeps evicting
        try relWithKeys { key, controlKey in
            let cache = try ShmLRU.create(key: key, recordSize: 64, capacity: capacity, index: kind)
            let control = try RelControl(key: controlKey, words: 2 + processes * perProcess)
            let helpers = try (0..<processes).map { index in
                try spawnHelper([
                    "rel-soak", key.description, controlKey.description, String(index), String(processes), String(seconds),
                    String(perProcess), kind == .shared && index % 2 == 1 ? "1" : "0",
                ])
            }
            var operations = 0, verifies = 0, busyMisses = 0
            for (index, helper) in helpers.enumerated() {
                let run = helper.wait()
                #expect(run.status == 0, "soak process \(index): \(run.errorOutput)")
                operations += Int(run.values["operations"] ?? "0") ?? 0
                verifies += Int(run.values["verifies"] ?? "0") ?? 0
                busyMisses += Int(run.values["busyMisses"] ?? "0") ?? 0
            }
            let report = try cache.verify()
            #expect(report.isClean, "\(report)")
            let stats = cache.stats
            let counted = (0..<(processes * perProcess)).reduce(UInt64(0)) { $0 + UInt64(control.word(2 + $1)) }
            #expect(stats.evictions == counted, "the cache counted \(stats.evictions) evictions, the processes saw \(counted)")
            #expect(UInt64(stats.count) == stats.inserts - stats.deletes - stats.evictions, "\(stats)")
            #expect(stats.recoveries == 0, "nobody died, yet \(stats.recoveries) recoveries")
            relReport(
                "soak \(kind) \(processes) processes x \(seconds) s: \(operations) operations "
                    + "(\(stats.inserts) inserts, \(stats.updates) updates, \(stats.deletes) deletes, \(stats.evictions) evictions, "
                    + "\(verifies) verify() calls in the helpers, \(busyMisses) lock-free reads answered busy); verify() clean: \(report.isClean); \(stats.count) live at the end")
        }
    }
}
