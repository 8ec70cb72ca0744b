import CShm

// Lock-free reads of spilled values (memory mode). The record is found and
// checked as for any value (ShmStore+LockFreeRead.swift); its descriptor is
// copied inside the record's seqlock, then the chunks are copied straight into
// the result, each inside its own stamp check (`_ValueHeap.read`): a chunk
// whose stamp is not the descriptor's before or after its copy, a link out of
// range or a length that does not add up makes the whole read retry (bounded,
// then the locked path), never wait. The record's sequence is checked again
// after the chunks, as for an inline value: a reader gets one whole version.

extension ShmStore {
    /// The spilled value `view` names, copied from the heap; nil when its chunks
    /// changed under the copy (or its descriptor is malformed): retry.
    func _copySpilled(_ heap: _ValueHeap, _ view: _RecordView) -> [UInt8]? {
        guard let descriptor = heap.descriptor(view.value) else { return nil }
        return heap.copy(descriptor)
    }

    /// `_copySpilled` into a caller's buffer: the length, `-length` when the
    /// buffer is too small (nothing copied), nil to retry.
    func _copySpilled(_ heap: _ValueHeap, _ view: _RecordView, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        guard let descriptor = heap.descriptor(view.value) else { return nil }
        guard descriptor.length <= buffer.count, let target = buffer.baseAddress else { return -descriptor.length }
        return heap.read(descriptor, into: target) ? descriptor.length : nil
    }
}

extension _ListenerHub {
    /// The value of a logged set: inline in the entry, or for a spilled value read
    /// from the heap by the entry's descriptor (stamped read); when those chunks
    /// were reused since (the value was replaced or evicted), the key's value now
    /// (read once; nil if it is gone).
    func spilledValue(_ key: String, _ header: _PayloadHeader, _ payload: UnsafeRawBufferPointer) -> [UInt8]? {
        guard header.flags & _StoreLayout.payloadSpilled != 0, let store = owner, let heap = store._heap else {
            return Array(header.value(in: payload))
        }
        if let descriptor = heap.descriptor(header.value(in: payload)), let bytes = heap.copy(descriptor) { return bytes }
        return try? store.bytes(key)
    }
}
