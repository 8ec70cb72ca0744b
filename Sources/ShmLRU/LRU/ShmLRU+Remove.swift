extension ShmLRU {
    /// Deletes the record with `hash` (shm-typed-lru's `del_key`). Returns false if absent.
    @discardableResult
    public func remove(_ hash: UInt32) throws(ShmError) -> Bool {
        try _withLock("remove(\(hash), key: \(key))") { () throws(ShmError) -> Bool in
            guard let found = _find(hash) else { return false }
            try _removeLocked(found.slot, indexPosition: found.position)
            return true
        }
    }

    /// Deletes the record at `offset` (shm-typed-lru's `del_el`) and returns its hash.
    /// - Throws: `.invalidOffset` for an offset that is not a record's start,
    ///   `.alreadyDeleted` for a record that is not live.
    @discardableResult
    public func remove(atOffset offset: Int) throws(ShmError) -> UInt32 {
        let slot = try _slot(atOffset: offset, "remove(atOffset: \(offset))")
        return try _withLock("remove(atOffset: \(offset))") { () throws(ShmError) -> UInt32 in
            guard _segment.isLive(meta: _segment.meta(slot)) else {
                throw ShmError(.alreadyDeleted, "remove(atOffset: \(offset), key: \(key))")
            }
            let hash = _segment.hash(slot)
            try _removeLocked(slot, indexPosition: nil)
            return hash
        }
    }

    /// Removes every record.
    public func removeAll() throws(ShmError) {
        try _withLockedHandle("removeAll(key: \(key))") { (lru) throws(ShmError) in
            try lru.walkThrowing(from: .mostRecent) { (slot) throws(ShmError) -> Bool in
                try lru.remove(slot)
                return true
            }
        }
    }

    func _removeLocked(_ slot: UInt32, indexPosition: Int?) throws(ShmError) {
        _ = try _detachRecord(slot, indexPosition: indexPosition)
        _fault(.deleteFreed)
        _pushFree(slot)
        _segment.bumpStat(_Layout.H.statDeletes)
        _segment.publishChange()
    }
}
