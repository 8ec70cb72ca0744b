/// The index's geometry: where its entries are, how many, how an entry encodes a
/// record and where that record is (see "Index" in `_Layout.swift`). The one
/// owner of the entry encoding, the home position and an entry's record address:
/// the locked table (`_IndexTable`) and the searches (`_Probe`) both hold one, as
/// plain values.
///
/// An entry is `tag << indexBits | slot + 1` (0 is empty); the tag is the low
/// bits of the mixed hash. A slot decoded from an entry may be out of range in a
/// corrupt segment: its users check it against the capacity before they use it.
struct _IndexGeometry: @unchecked Sendable {
    let entries: UnsafeMutablePointer<UInt32>
    let slots: Int
    /// Shift from an entry to its tag (< 32: capacities are below 2^30).
    let indexBits: UInt32
    let tagMask: UInt32
    let slotMask: UInt32
    /// The first record, the distance between records, and how many there are.
    let records: UnsafeMutableRawPointer
    let stride: Int
    let capacity: Int

    /// - Parameter entries: the segment's shared index, or a process-local table.
    init(entries: UnsafeMutablePointer<UInt32>, slots: Int, segment: _Segment) {
        let layout = segment.layout
        self.entries = entries
        self.slots = slots
        indexBits = UInt32(layout.indexBits) & 31
        tagMask = layout.tagMask
        slotMask = layout.slotMask
        records = segment.base + layout.recordsOffset
        stride = layout.stride
        capacity = layout.capacity
    }

    /// The first position probed for a hash, from its mixed value (`_mix32`).
    @inline(__always) func home(mixed: UInt32) -> Int { Int(truncatingIfNeeded: (UInt64(mixed) &* UInt64(slots)) &>> 32) }
    @inline(__always) func tag(mixed: UInt32) -> UInt32 { mixed & tagMask }
    /// The entry naming `slot` for a hash with this mixed value.
    @inline(__always) func entry(mixed: UInt32, slot: UInt32) -> UInt32 { tag(mixed: mixed) &<< indexBits | (slot &+ 1) }
    @inline(__always) func entryTag(_ entry: UInt32) -> UInt32 { entry &>> indexBits }
    /// The slot an entry names (0 - 1 wraps above any capacity; check it).
    @inline(__always) func entrySlot(_ entry: UInt32) -> UInt32 { (entry & slotMask) &- 1 }
    /// The record in `slot`, if the slot is in range (an entry's: `entrySlot(_:)`).
    @inline(__always) func record(slot: UInt32) -> UnsafeMutableRawPointer? {
        Int(slot) < capacity ? records + Int(slot) &* stride : nil
    }
    /// The position after `position`, wrapping at the end.
    @inline(__always) func advance(_ position: Int) -> Int { position &+ 1 == slots ? 0 : position &+ 1 }
}
