import CShm

extension ShmLRU {
    /// What `verify()` found. `isClean` when there is no problem.
    public struct IntegrityReport: Sendable, Hashable, CustomStringConvertible {
        /// Each inconsistency, in words (at most 100 are kept).
        public var problems: [String] = []
        /// Records reached from the LRU head, and from the free-list head.
        public var liveRecords = 0
        /// Records found on the free list.
        public var freeRecords = 0
        /// Entries in the shared index (0 for a process-local index).
        public var indexEntries = 0
        /// True when no problem was found.
        public var isClean: Bool { problems.isEmpty }

        mutating func add(_ problem: String) {
            if problems.count < 100 { problems.append(problem) }
        }

        /// `clean: …` with the counts, or the problems, one a line.
        public var description: String {
            isClean
                ? "clean: \(liveRecords) live, \(freeRecords) on the free list, \(indexEntries) index entries"
                : "\(problems.count) problem(s): " + problems.joined(separator: "; ")
        }
    }

    /// Walks the LRU list both ways, the free list and the index, under the lock,
    /// and checks that every link is in bounds, nothing forms a cycle, every record
    /// is on exactly one list, and the counts and index agree. Never repairs
    /// (beyond what taking a dead holder's lock does): see `repair()`.
    public func verify() throws(ShmError) -> IntegrityReport {
        try _withLock("verify(key: \(key))") { () -> IntegrityReport in _verifyLocked() }
    }

    /// Checks the structure in test builds and traps on a problem (as
    /// swift-collections' `_checkInvariants()` does); does nothing otherwise.
    func _checkInvariants() {
        #if SHMLRU_TESTING
        do {
            let report = try verify()
            precondition(report.isClean, "ShmLRU invariants violated: \(report)")
        } catch {
            preconditionFailure("ShmLRU invariants could not be checked: \(error)")
        }
        #endif
    }

    func _verifyLocked() -> IntegrityReport {
        let s = _segment
        let capacity = capacity
        var report = IntegrityReport()
        // 0 unseen, 1 on the LRU list, 2 on the free list
        var seen = [UInt8](repeating: 0, count: capacity)
        let highWater = Int(s.load(_Layout.H.highWater))
        if highWater > capacity { report.add("high-water mark \(highWater) exceeds capacity \(capacity)") }

        // Forward walk.
        let lru = _LockedHandle(cache: self)
        var order: [UInt32] = []
        var hashes = Set<UInt32>()
        var previous = _Layout.none
        var forward = 0
        let forwardEnd = lru.walk(from: .mostRecent) { (record) -> Bool in
            let slot = record.index
            guard seen[Int(slot)] == 0 else {
                report.add("LRU list revisits record \(slot): a cycle")
                return false
            }
            seen[Int(slot)] = 1
            forward += 1
            let meta = s.meta(slot)
            if !s.isLive(meta: meta) { report.add("record \(slot) is on the LRU list but not live") }
            if s.length(meta: meta) > recordSize { report.add("record \(slot) claims \(s.length(meta: meta)) bytes") }
            if cshm_load_relaxed_u32(s.seqPointer(slot)) & 1 != 0 { report.add("record \(slot) was left half-written") }
            if s.prev(slot) != previous { report.add("record \(slot).prev is \(s.prev(slot)), expected \(previous)") }
            order.append(slot)
            if !hashes.insert(s.hash(slot)).inserted, indexKind == .shared {
                report.add("hash \(s.hash(slot)) is live twice")
            }
            previous = slot
            return true
        }
        if case .broken(let what) = forwardEnd { report.add(what) }
        report.liveRecords = forward
        if s.tail != previous { report.add("tail is \(s.tail), the forward walk ends at \(previous)") }
        if Int(s.count) != forward { report.add("count is \(s.count), the LRU list holds \(forward)") }
        _verifyPolicy(order: order, into: &report)

        // Backward walk.
        var backward = 0
        var next = _Layout.none
        let backwardEnd = lru.walk(from: .leastRecent) { (record) -> Bool in
            let slot = record.index
            guard seen[Int(slot)] == 1 else {
                report.add("backward walk reaches \(slot), not on the forward list")
                return false
            }
            if s.next(slot) != next { report.add("record \(slot).next is \(s.next(slot)), expected \(next)") }
            backward += 1
            next = slot
            return true
        }
        if case .broken(let what) = backwardEnd { report.add("backward walk: " + what) }
        if backward != forward { report.add("backward walk counts \(backward), forward \(forward)") }

        // Free list.
        var slot: UInt32
        var free = 0
        slot = s.freeHead
        while slot != _Layout.none {
            guard s.isSlot(slot) else {
                report.add("free-list link to \(slot) out of range")
                break
            }
            guard seen[Int(slot)] == 0 else {
                report.add(seen[Int(slot)] == 2 ? "free list revisits \(slot): a cycle" : "record \(slot) is on both lists")
                break
            }
            seen[Int(slot)] = 2
            free += 1
            if s.isLive(meta: s.meta(slot)) { report.add("record \(slot) is on the free list but live") }
            if Int(slot) >= highWater { report.add("free record \(slot) is above the high-water mark") }
            slot = s.next(slot)
        }
        report.freeRecords = free
        if Int(s.freeCount) != free { report.add("free count is \(s.freeCount), the free list holds \(free)") }
        let untouched = max(0, capacity - min(highWater, capacity))
        if forward + free + untouched != capacity {
            report.add("\(forward) live + \(free) free + \(untouched) unused != capacity \(capacity): records leaked")
        }
        for index in min(highWater, capacity)..<capacity where s.meta(UInt32(index)) != 0 {
            report.add("unused record \(index) is not empty")
            break
        }

        // Shared index.
        if let table = _sharedIndex {
            let indexSeq = cshm_load_relaxed_u32(s.indexSeqPointer)
            if indexSeq & 1 != 0 { report.add("index sequence left odd: a reshape was cut") }
            var entries = 0
            for position in 0..<table.slots {
                let entry = table.load(position)
                if entry == 0 { continue }
                entries += 1
                let target = table.geometry.entrySlot(entry)
                guard s.isSlot(target), seen[Int(target)] == 1 else {
                    report.add("index entry \(position) names \(target), not a live record")
                    continue
                }
                let hash = s.hash(target)
                if table.geometry.entryTag(entry) != table.geometry.tag(mixed: _mix32(hash)) {
                    report.add("index entry \(position) has the wrong tag for hash \(hash)")
                } else if table.find(hash)?.slot != target {
                    report.add("index entry \(position) for hash \(hash) is unreachable from its home")
                }
            }
            report.indexEntries = entries
            if entries != forward { report.add("index holds \(entries) entries, the LRU list \(forward)") }
        }
        return report
    }
}
