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
        try _withLock("removeAll(key: \(key))") { () throws(ShmError) in
            while let head = Optional(_segment.head), head != _Layout.none {
                guard _segment.isSlot(head) else { throw _corrupted("head \(head) out of range") }
                try _removeLocked(head, indexPosition: nil)
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
