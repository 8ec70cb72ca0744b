import CShm

// The change log: a ring of the last `logCapacity` changes in the store segment.
// Appends happen under the data segment's lock (one writer at a time, in the
// order of the changes); readers take no lock and copy an entry inside its
// sequence check, so an entry overwritten while being read is detected and
// counted as missed, never returned torn.

enum _ChangeKind: UInt32 {
    case set = 1
    case removed = 2
    case expired = 3
    case evicted = 4
}

extension _StoreSegment {
    var logHeadPointer: UnsafeMutablePointer<UInt64> { u64(_StoreLayout.H.logHead) }
    var logWordPointer: UnsafeMutablePointer<UInt32> { u32(_StoreLayout.H.logWord) }
    var logWaitersPointer: UnsafeMutablePointer<UInt32> { u32(_StoreLayout.H.logWaiters) }

    /// The next sequence to be written (entries below it are complete).
    var logHead: UInt64 { cshm_load_acquire_u64(logHeadPointer) }

    /// Appends a change (under the data segment's lock) and wakes the listeners.
    /// `payload` is a store record payload, cut to its key for removals.
    func appendChange(_ kind: _ChangeKind, payload: UnsafeRawBufferPointer) {
        let head = cshm_load_relaxed_u64(logHeadPointer)
        let entry = layout.logEntryOffset(head)
        let length = min(payload.count, layout.recordSize)
        let seq = u64(entry + _StoreLayout.E.seq)
        cshm_store_relaxed_u64(seq, 0)
        cshm_fence_release()
        store(entry + _StoreLayout.E.kind, kind.rawValue)
        store(entry + _StoreLayout.E.length, UInt32(length))
        if length > 0, let source = payload.baseAddress {
            (base + entry + _StoreLayout.E.payload).copyMemory(from: source, byteCount: length)
        }
        cshm_store_release_u64(seq, head &+ 1)
        cshm_store_release_u64(logHeadPointer, head &+ 1)
        _ = cshm_fetch_add_u32(logWordPointer, 1)
        cshm_fence_seq_cst()  // pairs with the listener's: it registers as a waiter, then rereads the word
        if cshm_load_relaxed_u32(logWaitersPointer) != 0 {
            _ = cshm_futex_wake(logWordPointer, Int32.max)
        }
    }

    /// Copies entry `sequence` into `buffer` (at least `recordSize` bytes). Nil if
    /// the entry was overwritten (the reader fell behind) or is not complete.
    func readChange(_ sequence: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> (kind: UInt32, length: Int)? {
        let entry = layout.logEntryOffset(sequence)
        let seq = u64(entry + _StoreLayout.E.seq)
        guard cshm_load_acquire_u64(seq) == sequence &+ 1 else { return nil }
        let kind = load(entry + _StoreLayout.E.kind)
        let length = Int(load(entry + _StoreLayout.E.length))
        guard length <= layout.recordSize, length <= buffer.count else { return nil }
        if length > 0 { cshm_racy_copy(buffer.baseAddress, base + entry + _StoreLayout.E.payload, length) }
        cshm_fence_acquire()
        guard cshm_load_relaxed_u64(seq) == sequence &+ 1 else { return nil }
        return (kind, length)
    }
}
