import CShm

extension ShmStore {
    /// Checks the data segment (`ShmLRU.verify()`) and, on top, that every live
    /// record is a store record (its key fits its length), lives under one of its
    /// key's probe hashes, and that no key is stored twice; and that the lock
    /// table's bound slots and waiter entries are in range; and in a store sized
    /// by memory, every chunk of the value heap (see `_verifyHeapLocked`).
    /// Changes nothing, but for the recovery any locker does first (a value heap
    /// left busy by a dead holder is rebuilt).
    public func verify() throws(ShmError) -> ShmLRU.IntegrityReport {
        var report = try cache._withLockedHandle("ShmStore.verify(key: \(key))") { (lru) throws(ShmError) -> ShmLRU.IntegrityReport in
            try _recoverHeapIfNeeded(lru)
            var report = lru.verify()
            _verifyHeapLocked(lru, &report)
            var keys = Set<[UInt8]>()
            // The cache's own checks report a broken list; this walk only reads what it can reach.
            lru.walk(from: .mostRecent) { (slot) -> Bool in
                guard let payload = try? lru.value(slot) else { return true }  // reported by the cache's checks
                if let header = _PayloadHeader.read(payload) {
                    let keyBytes = Array(header.key(in: payload))
                    let base = _hash(String(decoding: keyBytes, as: UTF8.self))
                    let distance = lru.hash(slot) &- base
                    if distance >= UInt32(configuration.probeLimit) {
                        report.add("record \(slot.index) is under hash \(lru.hash(slot)), not one of its key's probe hashes")
                    }
                    if !keys.insert(keyBytes).inserted { report.add("record \(slot.index): a key stored twice") }
                } else {
                    report.add("record \(slot.index) is not a store record (\(payload.count) bytes)")
                }
                return true
            }
            return report
        }
        try _locks.locked("ShmStore.verify(key: \(key))") { () throws(ShmError) in
            let layout = _store.layout
            for index in 0..<layout.waiterSlots {
                let tag = _store.load(_store.waiter(index, _StoreLayout.W.slot))
                if Int(tag) > layout.lockSlots, tag != _StoreLayout.doorbellTag { report.add("lock waiter \(index) names slot \(tag) of \(layout.lockSlots)") }
            }
            for index in 0..<layout.lockSlots where _store.load(_store.slot(index, _StoreLayout.L.state)) > _StoreLayout.slotReleased {
                report.add("lock slot \(index) has an unknown state")
            }
        }
        return report
    }
}
