import CShm

// Recovery and verification of the value heap (memory mode).
//
// A locker that finds the heap's busy word set (a holder died inside a heap
// change, or found a chain broken) or the data segment rebuilt since the heap
// was last consistent (records may have been dropped) rebuilds the heap before
// it uses it: it walks the live records (the handle's bounded walk), checks each
// spilled record's chain (every chunk in range, carrying the value's stamp, the
// lengths adding up, the last link ending it, no chunk claimed twice), removes a
// record whose chain is broken (its listeners are told it was removed), and
// makes every chunk no chain claims free. A kill inside a large write thus
// loses at most that key's update.

extension ShmStore {
    /// Rebuilds the heap if a dead holder or a data-segment repair left it out of step.
    @inline(__always)
    func _recoverHeapIfNeeded(_ lru: ShmLRU._LockedHandle) throws(ShmError) {
        guard let heap = _heap, heap.needsRecovery(dataGeneration: lru.dataGeneration) else { return }
        try _rebuildHeapLocked(lru, heap)
    }

    func _rebuildHeapLocked(_ lru: ShmLRU._LockedHandle, _ heap: _ValueHeap) throws(ShmError) {
        heap.begin()
        var claimed = [Bool](repeating: false, count: heap.chunkCount)
        var highest: UInt64 = 0
        var broken: [ShmLRU._Slot] = []
        try lru.walkThrowing(from: .mostRecent) { (slot) throws(ShmError) -> Bool in
            let payload = try lru.value(slot)
            guard let header = _PayloadHeader.read(payload), _isSpilled(header) else { return true }
            if let descriptor = _spilledDescriptor(header, payload), heap.claim(descriptor, &claimed) {
                highest = max(highest, descriptor.stamp)
            } else {
                broken.append(slot)
            }
            return true
        }
        for slot in broken {
            let payload = try lru.value(slot)
            if let header = _PayloadHeader.read(payload) {
                _store.appendChange(.removed, payload: header.keyed(in: payload))
            }
            try lru.remove(slot)
        }
        heap.rebuildFreeList(claimed: claimed, highestStamp: highest, dataGeneration: lru.dataGeneration)
        heap.end()
    }

    /// The heap's checks for `verify()`: every spilled record's chain whole and
    /// its own, the free list in range and acyclic, its count right, no chunk
    /// both free and in a chain, every chunk one or the other.
    func _verifyHeapLocked(_ lru: ShmLRU._LockedHandle, _ report: inout ShmLRU.IntegrityReport) {
        guard let heap = _heap else { return }
        var claimed = [Bool](repeating: false, count: heap.chunkCount)
        var chained = 0
        lru.walk(from: .mostRecent) { (slot) -> Bool in
            guard let payload = try? lru.value(slot), let header = _PayloadHeader.read(payload), _isSpilled(header) else { return true }
            guard let descriptor = _spilledDescriptor(header, payload) else {
                report.add("record \(slot.index): a malformed value heap descriptor")
                return true
            }
            if heap.claim(descriptor, &claimed) {
                chained += Int(descriptor.count)
            } else {
                report.add("record \(slot.index): its chunk chain is broken or shares a chunk with another")
            }
            return true
        }
        let (free, problem) = heap.freeChunks()
        if let problem { report.add("value heap: \(problem)") }
        for index in free where claimed[Int(index)] { report.add("value heap: chunk \(index) is both free and in a chain") }
        if free.count != heap.freeCount { report.add("value heap: free count \(heap.freeCount), free list \(free.count)") }
        if problem == nil, chained + free.count != heap.chunkCount {
            report.add("value heap: \(chained) chunks in chains + \(free.count) free != \(heap.chunkCount)")
        }
        if heap.busy != 0 { report.add("value heap: busy (a change was cut; the next store operation rebuilds it)") }
    }
}
