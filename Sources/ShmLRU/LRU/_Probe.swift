import CShm

/// What the lock-free read needs, flattened into one struct of plain values that
/// the handle holds: the index's geometry and the records' base and stride. The
/// read path then loads each with one instruction instead of copying the index
/// table and the layout (the hot path's prologue was most of its cost).
///
/// It describes the same memory as `_IndexTable` and `_Segment` and checks what it
/// reads the same way: a slot from an entry is checked against the capacity
/// before it is used, a length from a record against the record size.
struct _Probe: @unchecked Sendable {
    let entries: UnsafeMutablePointer<UInt32>
    let slots: Int
    /// Shift from an entry to its tag (< 32: capacities are below 2^30).
    let indexBits: UInt32
    let tagMask: UInt32
    let slotMask: UInt32
    /// The first record.
    let records: UnsafeMutableRawPointer
    let stride: Int
    let capacity: Int
    let recordSize: Int
    let indexSeq: UnsafeMutablePointer<UInt32>

    init(table: _IndexTable, segment: _Segment) {
        entries = table.entries
        slots = table.slots
        indexBits = table.indexBits & 31
        tagMask = table.tagMask
        slotMask = table.slotMask
        records = segment.base + segment.layout.recordsOffset
        stride = segment.layout.stride
        capacity = segment.layout.capacity
        recordSize = segment.layout.recordSize
        indexSeq = segment.indexSeqPointer
    }

    /// The position and slot of the live record with `hash` (under the lock). The
    /// one implementation of the search: `_IndexTable.find` calls it too.
    @inline(__always)
    func find(_ hash: UInt32) -> (position: Int, slot: UInt32)? {
        let mixed = _mix32(hash)
        let wanted = mixed & tagMask
        var position = home(mixed: mixed)
        var probes = slots
        while probes != 0 {
            let entry = cshm_load_relaxed_u32(entries + position)
            if entry == 0 { return nil }
            if entry &>> indexBits == wanted {
                let slot = (entry & slotMask) &- 1
                if Int(slot) < capacity {
                    let record = records + Int(slot) &* stride
                    if cshm_load_relaxed_u32((record + _Layout.R.hash).assumingMemoryBound(to: UInt32.self)) == hash,
                        cshm_load_relaxed_u32((record + _Layout.R.meta).assumingMemoryBound(to: UInt32.self)) >> 24
                            == _Layout.stateLive
                    {
                        return (position, slot)
                    }
                }
            }
            position &+= 1
            if position == slots { position = 0 }
            probes &-= 1
        }
        return nil
    }

    /// Before the lock is taken: asks for the lines that a locked `find(hash)`
    /// and the copy after it will read, so that their misses overlap the lock's
    /// acquisition instead of lengthening the critical section (which every
    /// other process waits for). Hints only: the home entry is read racily and
    /// used for nothing but a prefetch address, after the same range check as a
    /// real lookup; a prefetch never faults. The locked path checks everything again.
    @inline(__always)
    func warm(_ hash: UInt32) {
        let mixed = _mix32(hash)
        let entry = cshm_load_relaxed_u32(entries + home(mixed: mixed))
        let slot = (entry & slotMask) &- 1
        guard entry &>> indexBits == mixed & tagMask, Int(slot) < capacity else { return }
        let record = records + Int(slot) &* stride
        cshm_prefetch(record)
        var offset = 64
        let end = _Layout.R.payload &+ min(recordSize, 256)
        while offset < end {
            cshm_prefetch(record + offset)
            offset &+= 64
        }
        cshm_prefetch(record + (end &- 1))
    }

    @inline(__always) func home(mixed: UInt32) -> Int { Int(truncatingIfNeeded: (UInt64(mixed) &* UInt64(slots)) &>> 32) }

    /// The record an entry names, if the entry's slot is in range.
    @inline(__always) func record(entry: UInt32) -> UnsafeMutableRawPointer? {
        let slot = (entry & slotMask) &- 1  // 0 - 1 wraps above any capacity
        return Int(slot) < capacity ? records + Int(slot) &* stride : nil
    }
}
