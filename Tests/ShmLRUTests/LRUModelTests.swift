import Glibc
@testable import ShmLRU
import ShmLRUTestSupport
import Testing

/// Issue 3, model-based: random sequences of every operation against a plain
/// Swift reference LRU, compared after every step (count, stats, every record's
/// hash, value, share key and offset, and — for exact LRU — the order), with
/// `verify()` run on the real structure.
@Suite struct LRUModelTests {
    struct Config: Sendable, CustomTestStringConvertible {
        var index: ShmLRU.IndexKind
        var whenFull: ShmLRU.FullPolicy
        /// `.onEveryRead` (exact LRU: order compared) or `.atMostEvery` (values and membership only).
        var exact: Bool
        var seed: UInt64
        /// Small capacities reach the edges (one record: every insert evicts).
        var capacity = 24
        var hashRange: UInt32 = 40
        var testDescription: String {
            "\(index) \(whenFull == .refuse ? "refuse" : "evict") \(exact ? "exact" : "atMostEvery") capacity \(capacity) seed \(seed)"
        }
    }

    static let operationsPerSeed = 100_000

    static let configs: [Config] = [
        Config(index: .shared, whenFull: .evict, exact: true, seed: 1),
        Config(index: .shared, whenFull: .evict, exact: true, seed: 2),
        Config(index: .shared, whenFull: .evict, exact: true, seed: 3),
        Config(index: .processLocal, whenFull: .evict, exact: true, seed: 4),
        Config(index: .processLocal, whenFull: .evict, exact: true, seed: 5),
        Config(index: .processLocal, whenFull: .evict, exact: true, seed: 6),
        Config(index: .shared, whenFull: .refuse, exact: true, seed: 7),
        Config(index: .processLocal, whenFull: .refuse, exact: true, seed: 8),
        Config(index: .shared, whenFull: .evict, exact: false, seed: 9),
        Config(index: .shared, whenFull: .evict, exact: false, seed: 10),
        Config(index: .shared, whenFull: .refuse, exact: false, seed: 11),
        Config(index: .shared, whenFull: .evict, exact: true, seed: 12, capacity: 1, hashRange: 4),
        Config(index: .processLocal, whenFull: .evict, exact: true, seed: 13, capacity: 2, hashRange: 5),
        Config(index: .shared, whenFull: .refuse, exact: false, seed: 14, capacity: 1, hashRange: 3),
    ]

    @Test(arguments: configs)
    func randomOperationsMatchTheReference(_ config: Config) throws {
        try withKey { key in
            var run = try ModelRun(key: key, config: config)
            for step in 0..<Self.operationsPerSeed {
                run.step = step
                run.randomOperation()
                run.compare()
                if config.seed == 1 || config.seed == 4 || step % 4 == 0 { run.verify() }  // every step for one seed of each kind
                if run.failed { break }
            }
            run.verify()
            let diverged = run.failed
            #expect(!diverged, "\(config.testDescription): first divergence at step \(run.step)")
            if diverged { return }
            // Every kind of operation ran, and the cache was both full and empty.
            for (name, count) in run.opCounts.sorted(by: { $0.key < $1.key }) {
                #expect(count > 20, "operation \(name) ran only \(count) times")
            }
            #expect(run.timesFull > 100)
            #expect(run.timesEmpty > 10)
        }
    }
}

/// The reference: a plain array, most recently used first.
struct ReferenceLRU {
    struct Entry: Equatable {
        var hash: UInt32
        var value: [UInt8]
        var offset: Int
        var shareKey: UInt32
    }
    var entries: [Entry] = []
    var inserts: UInt64 = 0, updates: UInt64 = 0, deletes: UInt64 = 0, evictions: UInt64 = 0
    var hits: UInt64 = 0, misses: UInt64 = 0

    func index(of hash: UInt32) -> Int? { entries.firstIndex { $0.hash == hash } }
    func index(atOffset offset: Int) -> Int? { entries.firstIndex { $0.offset == offset } }
    mutating func promote(_ i: Int) { entries.insert(entries.remove(at: i), at: 0) }
}

struct ModelRun {
    let config: Config
    typealias Config = LRUModelTests.Config
    let cache: ShmLRU
    var model = ReferenceLRU()
    var random: SplitMix64
    let capacity: Int
    let recordSize = 24
    let hashRange: UInt32
    var offsetPool: [Int] = []
    var knownOffsets = Set<Int>()
    var step = 0
    var failed = false
    var opCounts: [String: Int] = [:]
    var timesFull = 0
    var timesEmpty = 0

    init(key: ShmKey, config: Config) throws {
        self.config = config
        capacity = config.capacity
        hashRange = config.hashRange
        random = SplitMix64(seed: config.seed)
        let options = ShmLRU.Options(
            whenFull: config.whenFull, promotion: config.exact ? .onEveryRead : .atMostEvery(.microseconds(20)))
        cache = try ShmLRU.create(key: key, recordSize: recordSize, capacity: capacity, index: config.index, options: options)
    }

    mutating func fail(_ message: String, sourceLocation: SourceLocation = #_sourceLocation) {
        guard !failed else { return }
        failed = true
        Issue.record("\(config.testDescription) step \(step): \(message)", sourceLocation: sourceLocation)
    }

    mutating func count(_ name: String) { opCounts[name, default: 0] += 1 }

    mutating func randomHash() -> UInt32 {
        switch Int.random(in: 0..<100, using: &random) {
        case 0: return 0
        case 1: return .max
        default: return UInt32.random(in: 1..<hashRange, using: &random)
        }
    }

    mutating func randomValue(maxLength: Int? = nil) -> [UInt8] {
        let length: Int
        switch Int.random(in: 0..<10, using: &random) {
        case 0: length = 0
        case 1: length = maxLength ?? recordSize
        default: length = Int.random(in: 0...(maxLength ?? recordSize), using: &random)
        }
        // Binary: NULs and high bytes are common.
        return (0..<length).map { _ in Int.random(in: 0..<4, using: &random) == 0 ? 0 : UInt8.random(in: 0...255, using: &random) }
    }

    /// A live offset, a dead one, or one that is not a record at all.
    mutating func randomOffset() -> (offset: Int, valid: Bool) {
        let layout = cache._segment.layout
        switch Int.random(in: 0..<10, using: &random) {
        case 0:
            let bad = [
                0, -1, Int.min, Int.max, layout.recordsOffset - 1, layout.recordsOffset + 1,
                layout.recordsOffset + layout.stride / 2, layout.totalSize, layout.recordsOffset + capacity * layout.stride,
                _Layout.H.count, layout.recordsOffset - layout.stride, layout.totalSize + layout.stride,
            ]
            return (bad[Int.random(in: 0..<bad.count, using: &random)], false)
        case 1...3 where !offsetPool.isEmpty:
            return (offsetPool[Int.random(in: 0..<offsetPool.count, using: &random)], true)
        default:
            if !model.entries.isEmpty {
                return (model.entries[Int.random(in: 0..<model.entries.count, using: &random)].offset, true)
            }
            // a never-used record: valid offset, not live
            return (layout.recordOffset(UInt32(Int.random(in: 0..<capacity, using: &random))), true)
        }
    }

    mutating func noteOffset(_ offset: Int) {
        if knownOffsets.insert(offset).inserted { offsetPool.append(offset) }
    }

    mutating func randomOperation() {
        if model.entries.count == capacity { timesFull += 1 }
        if model.entries.isEmpty { timesEmpty += 1 }
        let roll = Int.random(in: 0..<100, using: &random)
        switch roll {
        case 0..<30: set(shareKey: roll < 5 ? UInt32.random(in: 0...3, using: &random) : nil)
        case 30..<48: getByHash()
        case 48..<58: getByOffset()
        case 58..<66: removeByHash()
        case 66..<73: removeByOffset()
        case 73..<77: evict()
        case 77..<81: setShareKey()
        case 81..<84: tooLarge()
        case 84..<88: lookups()
        case 88..<90: if Int.random(in: 0..<20, using: &random) == 0 { removeAll() } else { getByHash() }
        default: getByHash()
        }
    }

    // MARK: Operations

    mutating func set(shareKey: UInt32?) {
        count("set")
        let hash = randomHash()
        let value = randomValue()
        let result = Result { () throws(ShmError) in try cache.set(hash, value, shareKey: shareKey) }
        if let i = model.index(of: hash) {
            guard case .success(let r) = result else { return fail("update of \(hash) failed: \(result)") }
            if !r.updated || r.evictedHash != nil || r.offset != model.entries[i].offset {
                return fail("update of \(hash): \(r), expected offset \(model.entries[i].offset)")
            }
            model.entries[i].value = value
            if let shareKey { model.entries[i].shareKey = shareKey }
            model.promote(i)
            model.updates += 1
            count("set.update")
            return
        }
        var evicted: UInt32? = nil
        if model.entries.count == capacity {
            if config.whenFull == .refuse {
                guard case .failure(let error) = result, error.code == .full else {
                    return fail("set of \(hash) into a full refusing cache: \(result)")
                }
                count("set.full")
                return
            }
            evicted = model.entries.last!.hash
        }
        guard case .success(let r) = result else { return fail("set of \(hash) failed: \(result)") }
        if r.updated { return fail("new \(hash) reported as updated") }
        if config.exact || evicted == nil {
            if r.evictedHash != evicted { return fail("set of \(hash) evicted \(String(describing: r.evictedHash)), expected \(String(describing: evicted))") }
        } else {
            // Inexact order: whichever it evicted must have been present.
            guard let e = r.evictedHash, e != hash, model.index(of: e) != nil else {
                return fail("set of \(hash) into a full cache evicted \(String(describing: r.evictedHash))")
            }
            evicted = e
        }
        if let evicted {
            let i = model.index(of: evicted)!
            // The victim's record is the one reused.
            if r.offset != model.entries[i].offset { return fail("evicted \(evicted) but reused offset \(r.offset)") }
            model.entries.remove(at: i)
            model.evictions += 1
            count("set.evict")
        }
        if model.index(atOffset: r.offset) != nil { return fail("new record \(hash) at a live offset \(r.offset)") }
        if cache._segment.layout.slot(atOffset: r.offset) == nil { return fail("offset \(r.offset) is not a record") }
        noteOffset(r.offset)
        model.entries.insert(.init(hash: hash, value: value, offset: r.offset, shareKey: shareKey ?? 0), at: 0)
        model.inserts += 1
        count("set.new")
    }

    mutating func getByHash() {
        let hash = randomHash()
        let expected = model.index(of: hash)
        let got: Result<[UInt8]?, any Error>
        switch Int.random(in: 0..<4, using: &random) {
        case 0:
            count("get.bytes")
            got = Result { try cache.bytes(hash) }
        case 1:
            count("get.withValue")
            got = Result { try cache.withValue(hash) { Array($0) } }
        case 2:
            count("get.string")
            got = Result { try cache.string(hash).map { _ in try cache.bytes(hash)! } }
            if case .success(.some) = got { model.hits += 1 }  // two reads of a hit
        default:
            // Copy into a caller's buffer, sometimes too small (an error, no promotion).
            let size = Int.random(in: 0...recordSize, using: &random)
            var buffer = [UInt8](repeating: 0xEE, count: size)
            let outcome = buffer.withUnsafeMutableBytes { raw in Result { () throws(ShmError) in try cache.get(hash, into: raw) } }
            switch outcome {
            case .success(let length?): got = .success(Array(buffer[0..<length]))
            case .success(nil): got = .success(nil)
            case .failure(let error):
                count("get.bufferTooSmall")
                guard let i = expected, error.code == .invalidArgument, model.entries[i].value.count > size else {
                    return fail("get(\(hash), into: \(size) bytes) threw \(error)")
                }
                return
            }
            count("get.into")
        }
        guard case .success(let value) = got else { return fail("get(\(hash)) threw \(got)") }
        if let i = expected {
            guard value == model.entries[i].value else {
                return fail("get(\(hash)) = \(String(describing: value)), expected \(model.entries[i].value)")
            }
            model.hits += 1
            if config.exact { model.promote(i) }
        } else {
            guard value == nil else { return fail("get(\(hash)) of an absent hash = \(value!)") }
            model.misses += 1
        }
    }

    mutating func getByOffset() {
        count("getAtOffset")
        let (offset, valid) = randomOffset()
        let got = Result { () throws(ShmError) in try cache.bytes(atOffset: offset) }
        if !valid {
            guard case .failure(let error) = got, error.code == .invalidOffset else {
                return fail("bytes(atOffset: \(offset)) of a non-record: \(got)")
            }
            count("getAtOffset.invalid")
            return
        }
        if let i = model.index(atOffset: offset) {
            guard case .success(let value) = got, value == model.entries[i].value else {
                return fail("bytes(atOffset: \(offset)) = \(got), expected \(model.entries[i].value)")
            }
            model.hits += 1
            if config.exact { model.promote(i) }
            count("getAtOffset.live")
        } else {
            guard case .failure(let error) = got, error.code == .alreadyDeleted else {
                return fail("bytes(atOffset: \(offset)) of a free record: \(got)")
            }
            count("getAtOffset.deleted")
        }
    }

    mutating func removeByHash() {
        count("remove")
        let hash = randomHash()
        let got = Result { () throws(ShmError) in try cache.remove(hash) }
        guard case .success(let removed) = got else { return fail("remove(\(hash)) threw \(got)") }
        if let i = model.index(of: hash) {
            guard removed else { return fail("remove(\(hash)) of a present hash returned false") }
            model.entries.remove(at: i)
            model.deletes += 1
        } else if removed {
            return fail("remove(\(hash)) of an absent hash returned true")
        }
    }

    mutating func removeByOffset() {
        count("removeAtOffset")
        let (offset, valid) = randomOffset()
        let got = Result { () throws(ShmError) in try cache.remove(atOffset: offset) }
        if !valid {
            guard case .failure(let error) = got, error.code == .invalidOffset else {
                return fail("remove(atOffset: \(offset)) of a non-record: \(got)")
            }
            return
        }
        if let i = model.index(atOffset: offset) {
            guard case .success(let hash) = got, hash == model.entries[i].hash else {
                return fail("remove(atOffset: \(offset)) = \(got), expected \(model.entries[i].hash)")
            }
            model.entries.remove(at: i)
            model.deletes += 1
            // A double delete is an error and changes nothing.
            let again = Result { () throws(ShmError) in try cache.remove(atOffset: offset) }
            guard case .failure(let error) = again, error.code == .alreadyDeleted else {
                return fail("second remove(atOffset: \(offset)) = \(again)")
            }
            count("removeAtOffset.double")
        } else {
            guard case .failure(let error) = got, error.code == .alreadyDeleted else {
                return fail("remove(atOffset: \(offset)) of a free record: \(got)")
            }
        }
    }

    mutating func evict() {
        count("evict")
        let limits = [0, 1, 2, 5, Int.max]
        let limit = limits[Int.random(in: 0..<limits.count, using: &random)]
        // Last-use stamps, without counting as uses, tail first.
        var stamps: [UInt32: UInt64] = [:]
        for entry in model.entries {
            guard let stamp = try? cache.lastUsed(entry.hash) else { return fail("lastUsed(\(entry.hash)) is nil for a live hash") }
            stamps[entry.hash] = stamp.nanoseconds
        }
        let cutoff: ShmInstant
        switch Int.random(in: 0..<4, using: &random) {
        case 0: cutoff = ShmInstant(nanoseconds: 0)
        case 1: cutoff = .now
        default:
            if let pick = model.entries.randomElement(using: &random) {
                cutoff = ShmInstant(nanoseconds: stamps[pick.hash]! &+ UInt64(Int.random(in: 0...1, using: &random)))
            } else {
                cutoff = .now
            }
        }
        let got = Result { () throws(ShmError) in try cache.evict(lastUsedBefore: cutoff, limit: limit) }
        guard case .success(let evicted) = got else { return fail("evict threw \(got)") }
        if evicted.count > limit { return fail("evicted \(evicted.count) > limit \(limit)") }
        if config.exact {
            // From the tail, while older than the cutoff, at most `limit`.
            var expected: [UInt32] = []
            for entry in model.entries.reversed() {
                guard expected.count < limit, stamps[entry.hash]! < cutoff.nanoseconds else { break }
                expected.append(entry.hash)
            }
            if evicted != expected { return fail("evict(before \(cutoff), limit \(limit)) = \(evicted), expected \(expected)") }
        } else {
            for hash in evicted where (stamps[hash] ?? .max) >= cutoff.nanoseconds {
                return fail("evicted \(hash) used at \(String(describing: stamps[hash])), not before \(cutoff)")
            }
            if evicted.count < limit, evicted.count < model.entries.count {
                // It stopped early: the record now at the tail is not older than the cutoff.
                let tail = cache._segment.tail
                if stamps[cache._segment.hash(tail)].map({ $0 < cutoff.nanoseconds }) ?? true {
                    return fail("evict stopped before a record older than the cutoff")
                }
            }
        }
        for hash in evicted {
            guard let i = model.index(of: hash) else { return fail("evicted absent hash \(hash)") }
            model.entries.remove(at: i)
            model.evictions += 1
        }
        if limit == 0 { count("evict.limit0") }
        if !evicted.isEmpty { count("evict.some") }
    }

    mutating func setShareKey() {
        count("setShareKey")
        let (offset, valid) = randomOffset()
        let share = UInt32.random(in: 0...UInt32.max, using: &random)
        let got = Result { () throws(ShmError) in try cache.setShareKey(share, atOffset: offset) }
        if !valid {
            guard case .failure(let error) = got, error.code == .invalidOffset else {
                return fail("setShareKey(atOffset: \(offset)) of a non-record: \(got)")
            }
            return
        }
        if let i = model.index(atOffset: offset) {
            guard case .success = got else { return fail("setShareKey(atOffset: \(offset)) threw \(got)") }
            model.entries[i].shareKey = share  // not a use: no promotion
        } else {
            guard case .failure(let error) = got, error.code == .alreadyDeleted else {
                return fail("setShareKey(atOffset: \(offset)) of a free record: \(got)")
            }
        }
    }

    mutating func tooLarge() {
        count("tooLarge")
        let hash = randomHash()
        let value = [UInt8](repeating: 7, count: recordSize + Int.random(in: 1...100, using: &random))
        let got = Result { () throws(ShmError) in try cache.set(hash, value) }
        guard case .failure(let error) = got, error.code == .valueTooLarge else {
            return fail("set of \(value.count) bytes into \(recordSize)-byte records: \(got)")
        }
    }

    mutating func lookups() {
        count("lookups")
        let hash = randomHash()
        let contains = Result { () throws(ShmError) in try cache.contains(hash) }
        let lastUsed = Result { () throws(ShmError) in try cache.lastUsed(hash) }
        guard case .success(let c) = contains, case .success(let l) = lastUsed else { return fail("contains/lastUsed threw") }
        let present = model.index(of: hash) != nil
        if c != present || (l != nil) != present { return fail("contains(\(hash)) = \(c), lastUsed \(String(describing: l)), model \(present)") }
    }

    mutating func removeAll() {
        count("removeAll")
        guard case .success = Result(catching: { () throws(ShmError) in try cache.removeAll() }) else { return fail("removeAll threw") }
        model.deletes += UInt64(model.entries.count)
        model.entries.removeAll()
    }

    // MARK: Checks

    /// Compares everything, without allocating: count, stats, and each record.
    mutating func compare() {
        guard !failed else { return }
        if cache.count != model.entries.count { return fail("count \(cache.count), model \(model.entries.count)") }
        let stats = cache.stats
        if stats.count + stats.free != stats.capacity || stats.capacity != capacity { return fail("stats do not add up: \(stats)") }
        if stats.inserts != model.inserts || stats.updates != model.updates || stats.deletes != model.deletes
            || stats.evictions != model.evictions || stats.hits != model.hits || stats.misses != model.misses
        {
            return fail("stats \(stats) vs model inserts \(model.inserts) updates \(model.updates) deletes \(model.deletes) evictions \(model.evictions) hits \(model.hits) misses \(model.misses)")
        }
        if stats.inserts &- stats.deletes &- stats.evictions != UInt64(stats.count) { return fail("inserts - deletes - evictions != count: \(stats)") }
        let s = cache._segment
        var slot = s.head
        var position = 0
        var previousStamp = UInt64.max
        while slot != _Layout.none {
            guard s.isSlot(slot), position < model.entries.count else { return fail("list longer than the model or out of range") }
            let hash = s.hash(slot)
            let entry: ReferenceLRU.Entry
            if config.exact {
                entry = model.entries[position]
                if entry.hash != hash { return fail("LRU position \(position) holds \(hash), model \(entry.hash)") }
            } else {
                guard let i = model.index(of: hash) else { return fail("cache holds \(hash), the model does not") }
                entry = model.entries[i]
            }
            let length = s.length(meta: s.meta(slot))
            if length != entry.value.count || !entry.value.withUnsafeBytes({ memcmp($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, s.payload(slot), length) == 0 }) {
                return fail("value of \(hash) differs from the model")
            }
            if s.shareKey(slot) != entry.shareKey { return fail("share key of \(hash) is \(s.shareKey(slot)), model \(entry.shareKey)") }
            if s.layout.recordOffset(slot) != entry.offset { return fail("offset of \(hash) is \(s.layout.recordOffset(slot)), model \(entry.offset)") }
            // Exact LRU keeps the list in last-use order. Interval promotion marks a used
            // record where it stands (it moves only when it reaches the tail), so there
            // the order of last uses along the list is not an invariant.
            let stamp = s.lastUse(slot)
            if config.exact, stamp > previousStamp { return fail("last-use stamps increase towards the tail at \(hash)") }
            previousStamp = stamp
            position += 1
            slot = s.next(slot)
        }
        if position != model.entries.count { return fail("list holds \(position), model \(model.entries.count)") }
    }

    mutating func verify() {
        guard !failed else { return }
        switch Result(catching: { () throws(ShmError) in try cache.verify() }) {
        case .success(let report):
            if !report.isClean { fail("verify: \(report)") }
            if report.liveRecords != model.entries.count { fail("verify counts \(report.liveRecords) live") }
            if config.index == .shared, report.indexEntries != model.entries.count { fail("verify counts \(report.indexEntries) index entries") }
        case .failure(let error): fail("verify threw \(error)")
        }
    }
}
