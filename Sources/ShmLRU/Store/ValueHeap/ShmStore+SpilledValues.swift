import CShm

// Writing, reading (under the lock) and freeing values that live in the value
// heap (_ValueHeap.swift), for a store sized by memory. Every step runs under
// the data segment's lock.
//
// A write of a spilled value: make room (for a new key's record, then evict by
// the store's policy until the heap has the chunks the value needs, never the
// record being updated, never more than needed), set the heap busy, write the
// chunks under a fresh stamp, write the record (`lru.replace`: the old record
// and its chunks stay until the new record is linked), free the old value's
// chunks, clear busy. A holder killed anywhere in between leaves busy set: the
// next locker rebuilds the heap from the records (ShmStore+ValueHeapRecovery.swift),
// and the key keeps its old value or has the new one, whole.

extension ShmStore {
    /// Whether a record's value lives in the heap (flag set, and the store has one).
    @inline(__always)
    func _isSpilled(_ header: _PayloadHeader) -> Bool { header.flags & _StoreLayout.payloadSpilled != 0 && _heap != nil }

    /// The descriptor of a spilled record; nil when inline (or malformed).
    func _spilledDescriptor(_ header: _PayloadHeader, _ payload: UnsafeRawBufferPointer) -> _ValueHeap.Descriptor? {
        guard let heap = _heap, header.flags & _StoreLayout.payloadSpilled != 0 else { return nil }
        return heap.descriptor(header.value(in: payload))
    }

    /// A located record's value (under the data lock), read from its chunks when
    /// spilled. A broken chain marks the heap for rebuild and throws `.corrupted`
    /// (the lock's caller repairs and runs the operation again: the record is gone then).
    func _valueBytesLocked(_ lru: ShmLRU._LockedHandle, _ header: _PayloadHeader, _ payload: UnsafeRawBufferPointer)
        throws(ShmError) -> [UInt8]
    {
        guard let heap = _heap, header.flags & _StoreLayout.payloadSpilled != 0 else { return Array(header.value(in: payload)) }
        guard let descriptor = heap.descriptor(header.value(in: payload)), let bytes = heap.copy(descriptor) else {
            heap.begin()
            throw lru.corrupted("a spilled value's chunk chain is broken")
        }
        return bytes
    }

    /// Runs `body`, which lets go of the record holding `payload`, and frees its
    /// chunks after (a chain found broken leaves the heap busy: rebuilt next time).
    func _releasingChunks(
        _ header: _PayloadHeader, _ payload: UnsafeRawBufferPointer, _ body: () throws(ShmError) -> Void
    ) throws(ShmError) {
        guard let heap = _heap, header.flags & _StoreLayout.payloadSpilled != 0 else { return try body() }
        let descriptor = heap.descriptor(header.value(in: payload))  // read while the record holds it
        heap.begin()
        try body()
        if let descriptor, heap.free(descriptor) { heap.end() }
    }

    /// Writes a value of a store with a heap: inline when 24 + key + value fits
    /// the record, else spilled over chunks. `hash` and the record room are
    /// settled by the caller (`_writeLocked`).
    func _writeWithHeapLocked(
        _ lru: ShmLRU._LockedHandle, _ heap: _ValueHeap, _ key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer,
        found: _Located?, hash: UInt32, now: UInt64, expiresAt: UInt64, maxAge: UInt64, _ operation: @autoclosure () -> String
    ) throws(ShmError) {
        let spills = _StoreLayout.payloadHeaderSize + key.count + value.count > lru.recordSize
        let oldSpilled = found.map { _isSpilled($0.header) } ?? false
        guard spills || oldSpilled else {
            let payload = _StorePayload.make(key: key, value: value, expiresAt: expiresAt, maxAge: maxAge)
            return try _withBytes(payload) { (buffer) throws(ShmError) in try _storeRecordLocked(lru, buffer, found: found, hash: hash) }
        }
        let old = found.flatMap { _spilledDescriptor($0.header, $0.payload) }
        let payload: [UInt8]
        if spills {
            let needed = _ValueHeap.chunks(for: value.count)
            while heap.freeCount < needed {
                guard lru.count > (found == nil ? 0 : 1) else {
                    heap.begin()  // the chunks are somewhere: rebuild the heap and try again
                    throw lru.corrupted("the value heap has \(heap.freeCount) free chunks with no entry to evict")
                }
                try _makeRoomLocked(lru, now: now, operation(), sparing: found?.slot)
            }
            heap.begin()
            guard let descriptor = heap.write(value, fault: { lru.fault(.heapChunks) }) else {
                throw lru.corrupted("the value heap's free list is broken")  // busy stays set: rebuilt on the retry
            }
            lru.fault(.heapWritten)
            payload = _ValueHeap.encode(descriptor).withUnsafeBytes { (bytes) in
                _StorePayload.make(key: key, value: bytes, expiresAt: expiresAt, maxAge: maxAge, flags: _StoreLayout.payloadSpilled)
            }
        } else {
            heap.begin()
            payload = _StorePayload.make(key: key, value: value, expiresAt: expiresAt, maxAge: maxAge)
        }
        try _withBytes(payload) { (buffer) throws(ShmError) in try _storeRecordLocked(lru, buffer, found: found, hash: hash) }
        lru.fault(.heapLinked)
        if oldSpilled {
            guard let old, heap.free(old) else { return }  // broken: stays busy, rebuilt by the next locker
        }
        heap.end()
    }
}

extension ShmStore {
    /// `_checkFits` for a store with a value heap: the key must fit a record
    /// beside a descriptor, the value `maxValueSize`.
    func _checkFitsHeap(_ heap: _ValueHeap, _ keyCount: Int, _ valueCount: Int, _ operation: @autoclosure () -> String)
        throws(ShmError)
    {
        let maxKey = cache.recordSize - _StoreLayout.payloadHeaderSize - _ValueHeap.descriptorSize
        guard keyCount <= maxKey else {
            throw ShmError(
                .valueTooLarge, operation(), detail: "a \(keyCount)-byte key; keys of a store sized by memory hold up to \(maxKey) bytes")
        }
        guard valueCount <= heap.maxValueSize else {
            throw ShmError(.valueTooLarge, operation(), detail: "a \(valueCount)-byte value; maxValueSize is \(heap.maxValueSize)")
        }
    }
}
