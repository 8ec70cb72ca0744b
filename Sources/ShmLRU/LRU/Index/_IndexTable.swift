import CShm

/// The hash -> slot index: open addressing with linear probing over UInt32 entries.
///
/// One implementation serves both index kinds: for `.shared` the entries live in
/// the segment (after the header); for `.processLocal` in this process's memory.
/// An entry never decides a lookup on its own: the record it points to must be
/// live and carry the asked hash, so a stale or corrupt entry yields a miss,
/// never another key's value. Mutations happen under the segment's lock.
struct _IndexTable: @unchecked Sendable {
    let geometry: _IndexGeometry
    let segment: _Segment

    init(entries: UnsafeMutablePointer<UInt32>, slots: Int, segment: _Segment) {
        geometry = _IndexGeometry(entries: entries, slots: slots, segment: segment)
        self.segment = segment
    }

    /// How many entries a process-local table holds for a capacity.
    static func localSlots(capacity: Int) -> Int { max(16, 2 * capacity) }

    var entries: UnsafeMutablePointer<UInt32> { geometry.entries }
    var slots: Int { geometry.slots }
    @inline(__always) func load(_ position: Int) -> UInt32 { cshm_load_acquire_u32(geometry.entries + position) }
    @inline(__always) func store(_ position: Int, _ value: UInt32) { cshm_store_release_u32(geometry.entries + position, value) }

    /// The position and slot of the live record with `hash` (under the lock).
    func find(_ hash: UInt32) -> (position: Int, slot: UInt32)? {
        _Probe(table: self, segment: segment).find(hash)  // one search, shared with the read path
    }

    /// The position of the entry that names `slot` under `hash`, live or not (under the lock).
    @inline(__always)
    func position(of hash: UInt32, slot: UInt32) -> Int? {
        let mixed = _mix32(hash)
        let wanted = geometry.entry(mixed: mixed, slot: slot)
        var position = geometry.home(mixed: mixed)
        for _ in 0..<slots {
            let entry = load(position)
            if entry == 0 { return nil }
            if entry == wanted { return position }
            position = geometry.advance(position)
        }
        return nil
    }

    /// Adds `hash -> slot`; the caller knows the hash is absent. False if the table is full.
    @inline(__always)
    func insert(_ hash: UInt32, slot: UInt32) -> Bool {
        let mixed = _mix32(hash)
        let entry = geometry.entry(mixed: mixed, slot: slot)
        var position = geometry.home(mixed: mixed)
        for _ in 0..<slots {
            if load(position) == 0 {
                store(position, entry)
                return true
            }
            position = geometry.advance(position)
        }
        return false
    }

    /// Removes the entry at `position`, shifting later entries of the run back so
    /// that no lookup needs a tombstone. Entries are re-homed by their record's
    /// current hash.
    @inline(__always)
    func remove(at position: Int) {
        var hole = position
        var probe = position
        for _ in 0..<slots {
            probe = geometry.advance(probe)
            let entry = load(probe)
            if entry == 0 { break }
            let slot = geometry.entrySlot(entry)
            // Move the entry into the hole unless its home lies cyclically in (hole, probe].
            // An entry naming no valid slot is garbage: moving it keeps the run intact.
            var homeInBetween = false
            if segment.isSlot(slot) {
                let home = geometry.home(mixed: _mix32(segment.hash(slot)))
                homeInBetween = hole <= probe ? (home > hole && home <= probe) : (home > hole || home <= probe)
            }
            if !homeInBetween {
                store(hole, entry)
                hole = probe
            }
        }
        store(hole, 0)
    }

    func removeAll() {
        entries.update(repeating: 0, count: slots)
    }
}
