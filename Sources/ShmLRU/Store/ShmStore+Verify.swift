import CShm

extension ShmStore {
    /// Checks the data segment (`ShmLRU.verify()`) and, on top, that every live
    /// record is a store record (its key fits its length), lives under one of its
    /// key's probe hashes, and that no key is stored twice; and that the lock
    /// table's bound slots and waiter entries are in range. Changes nothing.
    public func verify() throws(ShmError) -> ShmLRU.IntegrityReport {
        var report = try cache._withLock("ShmStore.verify(key: \(key))") { () throws(ShmError) -> ShmLRU.IntegrityReport in
            var report = cache._verifyLocked()
            let s = cache._segment
            var keys = Set<[UInt8]>()
            var slot = s.head
            var steps = 0
            while slot != _Layout.none, s.isSlot(slot), steps < cache.capacity {
                let length = s.length(meta: s.meta(slot))
                if length <= cache.recordSize {
                    let payload = UnsafeRawBufferPointer(start: s.payload(slot), count: length)
                    if let header = _PayloadHeader.read(payload) {
                        let keyBytes = Array(header.key(in: payload))
                        let base = _hash(String(decoding: keyBytes, as: UTF8.self))
                        let distance = s.hash(slot) &- base
                        if distance >= UInt32(configuration.probeLimit) {
                            report.add("record \(slot) is under hash \(s.hash(slot)), not one of its key's probe hashes")
                        }
                        if !keys.insert(keyBytes).inserted { report.add("record \(slot): a key stored twice") }
                    } else {
                        report.add("record \(slot) is not a store record (\(length) bytes)")
                    }
                }
                slot = s.next(slot)
                steps += 1
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
