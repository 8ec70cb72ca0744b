import CShm

/// A process-local hash -> slot map (shm-typed-lru's per-process map), for caches
/// created with `IndexKind.processLocal`. Touched only under the segment's lock.
final class _LocalIndex: @unchecked Sendable {
    let table: _IndexTable
    /// Entries in the table, stale ones included; past 3/4 of the table it is rebuilt.
    var entryCount = 0
    /// The segment's generation when the table was last rebuilt (recovery bumps it).
    var generationSeen: UInt32 = 0

    init(segment: _Segment) {
        let slots = _IndexTable.localSlots(capacity: segment.layout.capacity)
        let entries = UnsafeMutablePointer<UInt32>.allocate(capacity: slots)
        entries.initialize(repeating: 0, count: slots)
        table = _IndexTable(entries: entries, slots: slots, segment: segment)
    }

    deinit { table.entries.deallocate() }

    func insert(_ hash: UInt32, slot: UInt32) throws(ShmError) {
        if entryCount >= table.slots / 4 * 3 { try rebuild(shareKey: nil) }
        if table.find(hash) != nil { return }
        guard table.insert(hash, slot: slot) else {
            throw ShmError(.corrupted, "local index", detail: "table full")
        }
        entryCount += 1
    }

    func remove(hash: UInt32, slot: UInt32) {
        if let position = table.position(of: hash, slot: slot) {
            table.remove(at: position)
            entryCount -= 1
        }
    }

    /// Rebuilds the map from the records: all live ones, or (with a share key) the
    /// current map plus the live records carrying that share key. Scans slots in
    /// address order (no list walk), so a corrupt link cannot mislead it; where a
    /// hash appears twice the most recently used record wins.
    ///
    func rebuild(shareKey: UInt32?) throws(ShmError) {
        let segment = table.segment
        let layout = segment.layout
        let highWater = min(Int(segment.load(_Layout.H.highWater)), layout.capacity)
        defer { generationSeen = segment.generation }
        if let shareKey {
            for index in 0..<highWater {
                let slot = UInt32(index)
                guard segment.isLive(meta: segment.meta(slot)), segment.shareKey(slot) == shareKey else { continue }
                let hash = segment.hash(slot)
                let mixed = _mix32(hash)
                guard place(slot, hash: hash, entry: table.geometry.entry(mixed: mixed, slot: slot), home: table.geometry.home(mixed: mixed))
                else { throw ShmError(.corrupted, "local index", detail: "table full") }
            }
            return
        }
        table.removeAll()
        entryCount = 0
        // One pass over the records' headers, in slot order. Each record's index
        // position is asked for when the record is read and filled `lag` records
        // later, so the table's cache misses overlap instead of following one
        // another (a 1M-record rebuild was one miss per record); the headers are
        // asked for `lag` records ahead too.
        let lag = 16
        let ring = UnsafeMutablePointer<UInt64>.allocate(capacity: lag)
        defer { ring.deallocate() }
        let first = UnsafeRawPointer(segment.base + layout.recordsOffset)
        let stride = layout.stride
        let geometry = table.geometry
        let entries = geometry.entries
        var pending = 0
        var placed = 0
        func fill(_ value: UInt64) throws(ShmError) {
            let entry = UInt32(truncatingIfNeeded: value)
            let home = Int(truncatingIfNeeded: value &>> 32)
            if entries[home] == 0 {  // the common case: the home is empty
                entries[home] = entry
                placed &+= 1
                return
            }
            let before = entryCount
            guard place(geometry.entrySlot(entry), hash: nil, entry: entry, home: home) else {
                throw ShmError(.corrupted, "local index", detail: "table full")
            }
            placed &+= entryCount &- before
            entryCount = before
        }
        #if SHMLRU_TESTING
        let faults = segment.faults
        #endif
        for index in 0..<highWater {
            #if SHMLRU_TESTING
            if index == highWater / 2, let faults { faults.reach(.reloadPartial) }
            #endif
            let record = first + index &* stride
            if index &+ lag < highWater { cshm_prefetch(record + lag &* stride) }
            let meta = cshm_load_relaxed_u32((record + _Layout.R.meta).assumingMemoryBound(to: UInt32.self))
            guard meta &>> 24 == _Layout.stateLive else { continue }
            let mixed = _mix32(cshm_load_relaxed_u32((record + _Layout.R.hash).assumingMemoryBound(to: UInt32.self)))
            let entry = geometry.entry(mixed: mixed, slot: UInt32(truncatingIfNeeded: index))
            let home = geometry.home(mixed: mixed)
            cshm_prefetch(entries + home)
            let at = pending & (lag - 1)  // lag is a power of two
            if pending >= lag { try fill(ring[at]) }
            ring[at] = UInt64(truncatingIfNeeded: home) &<< 32 | UInt64(entry)
            pending &+= 1
        }
        for i in max(0, pending - lag)..<pending { try fill(ring[i & (lag - 1)]) }
        entryCount &+= placed
    }

    /// Puts `entry` (naming the live record `slot`) in the table, probing from
    /// `home`: at the first empty position, unless a live record with the same
    /// hash is met on the way, in which case the more recently used of the two
    /// keeps the position. False if the table is full. `hash` is read from the
    /// record when nil (only needed when a tag matches).
    @inline(__always)
    private func place(_ slot: UInt32, hash: UInt32?, entry: UInt32, home: Int) -> Bool {
        let segment = table.segment
        let geometry = table.geometry
        let tag = geometry.entryTag(entry)
        var position = home
        for _ in 0..<table.slots {
            let existing = table.entries[position]
            if existing == 0 {
                table.entries[position] = entry
                entryCount += 1
                return true
            }
            if geometry.entryTag(existing) == tag {
                let other = geometry.entrySlot(existing)
                let hash = hash ?? segment.hash(slot)
                if segment.isSlot(other), segment.hash(other) == hash, segment.isLive(meta: segment.meta(other)) {
                    if other != slot, segment.lastUse(slot) > segment.lastUse(other) { table.entries[position] = entry }
                    return true
                }
            }
            position = geometry.advance(position)
        }
        return false
    }
}

extension ShmLRU {
    /// The live record with `hash` under the lock: (index position, slot).
    @inline(__always)
    func _find(_ hash: UInt32) -> (position: Int, slot: UInt32)? {
        _probe.find(hash)  // the shared table, or this process's (its entries never move)
    }

    @inline(__always)
    func _indexInsert(_ hash: UInt32, slot: UInt32) throws(ShmError) {
        if let shared = _sharedIndex {
            guard shared.insert(hash, slot: slot) else { throw _corrupted("shared index full") }
        } else {
            try _localIndex!.insert(hash, slot: slot)
        }
    }

    @inline(__always)
    func _indexRemove(hash: UInt32, slot: UInt32, knownPosition: Int?) {
        if let shared = _sharedIndex {
            guard let position = knownPosition ?? shared.position(of: hash, slot: slot) else { return }
            // Odd while entries move: a lock-free reader that misses meanwhile retries.
            _seqlockWrite(_segment.indexSeqPointer) {
                _fault(.indexShifting)
                shared.remove(at: position)
            }
        } else {
            _localIndex!.remove(hash: hash, slot: slot)
        }
    }

    /// Rebuilds this process's map from the segment (shm-typed-lru's `reload_hash_map`).
    /// With the shared index there is nothing to rebuild: every process sees every
    /// change at once. Returns the number of live records.
    @discardableResult
    public func reloadIndex() throws(ShmError) -> Int {
        try _withLock("reloadIndex(key: \(key))") { () throws(ShmError) -> Int in
            try _localIndex?.rebuild(shareKey: nil)
            return Int(_segment.count)
        }
    }

    /// Adds to this process's map the live records tagged with `shareKey`
    /// (shm-typed-lru's `reload_hash_map_update`). A no-op with the shared index.
    @discardableResult
    public func reloadIndex(shareKey: UInt32) throws(ShmError) -> Int {
        try _withLock("reloadIndex(key: \(key), shareKey: \(shareKey))") { () throws(ShmError) -> Int in
            try _localIndex?.rebuild(shareKey: shareKey)
            return Int(_segment.count)
        }
    }
}
