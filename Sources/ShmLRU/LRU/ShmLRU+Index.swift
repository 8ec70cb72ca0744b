import CShm

/// A process-local hash -> slot map (the seed's per-process map), for caches
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
    func rebuild(shareKey: UInt32?) throws(ShmError) {
        let segment = table.segment
        if shareKey == nil {
            table.removeAll()
            entryCount = 0
        }
        let highWater = min(Int(segment.load(_Layout.H.highWater)), segment.layout.capacity)
        for index in 0..<highWater {
            let slot = UInt32(index)
            let meta = segment.meta(slot)
            guard segment.isLive(meta: meta) else { continue }
            if let shareKey, segment.shareKey(slot) != shareKey { continue }
            let hash = segment.hash(slot)
            if let existing = table.find(hash) {
                guard existing.slot != slot, segment.stamp(slot) > segment.stamp(existing.slot) else { continue }
                table.store(existing.position, table.tag(mixed: _mix32(hash)) << table.indexBits | (slot &+ 1))
                continue
            }
            guard table.insert(hash, slot: slot) else { throw ShmError(.corrupted, "local index", detail: "table full") }
            entryCount += 1
        }
        generationSeen = segment.generation
    }
}

extension ShmLRU {
    /// The live record with `hash` under the lock: (index position, slot).
    @inline(__always)
    func _find(_ hash: UInt32) -> (position: Int, slot: UInt32)? {
        _probe.find(hash)  // the shared table, or this process's (its entries never move)
    }

    func _indexInsert(_ hash: UInt32, slot: UInt32) throws(ShmError) {
        if let shared = _sharedIndex {
            guard shared.insert(hash, slot: slot) else { throw _corrupted("shared index full") }
        } else {
            try _localIndex!.insert(hash, slot: slot)
        }
    }

    func _indexRemove(hash: UInt32, slot: UInt32, knownPosition: Int?) {
        if let shared = _sharedIndex {
            guard let position = knownPosition ?? shared.position(of: hash, slot: slot) else { return }
            let seq = _segment.indexSeqPointer
            // Odd while entries move: a lock-free reader that misses meanwhile retries.
            cshm_store_relaxed_u32(seq, cshm_load_relaxed_u32(seq) | 1)
            cshm_fence_release()
            shared.remove(at: position)
            cshm_store_release_u32(seq, cshm_load_relaxed_u32(seq) &+ 1)
        } else {
            _localIndex!.remove(hash: hash, slot: slot)
        }
    }

    /// Rebuilds this process's map from the segment (the seed's `reload_hash_map`).
    /// With the shared index there is nothing to rebuild: every process sees every
    /// change at once. Returns the number of live records.
    @discardableResult
    public func reloadIndex() throws(ShmError) -> Int {
        try _withLock("reloadIndex(key: \(key))") { () throws(ShmError) -> Int in
            try _localIndex?.rebuild(shareKey: nil)
            return Int(_segment.count)
        }
    }

    /// Adds to this process's map the live records tagged with `shareKey` (the
    /// seed's `reload_hash_map_update`). A no-op with the shared index.
    @discardableResult
    public func reloadIndex(shareKey: UInt32) throws(ShmError) -> Int {
        try _withLock("reloadIndex(key: \(key), shareKey: \(shareKey))") { () throws(ShmError) -> Int in
            try _localIndex?.rebuild(shareKey: shareKey)
            return Int(_segment.count)
        }
    }
}
