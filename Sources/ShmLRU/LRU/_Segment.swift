import CShm

/// Typed access to a laid-out segment: header fields and record fields by name.
///
/// Every accessor takes a slot that the caller has already checked with
/// `isSlot(_:)`; values read *from* the segment (links, lengths) come back raw
/// and must be checked again before they are used as slots or sizes.
@dynamicMemberLookup
struct _Segment: _RawFields, @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let layout: _Layout
    /// Test-only kill points (`SHMLRU_FAULT_INJECTION`); nil in production.
    /// Held unmanaged so that `_Segment` (and `_IndexTable`, which holds one) stays
    /// a plain value: copying it on the hot paths is then a register move, not a
    /// retain and release through outlined value witnesses (measured: ~200
    /// instructions per insert-evict). Safe because the only instance is
    /// `_FaultInjection.fromEnvironment`, a static that lives as long as the process.
    #if SHMLRU_TESTING
    private let _faults: Unmanaged<_FaultInjection>?
    var faults: _FaultInjection? { _faults?.takeUnretainedValue() }
    #endif

    /// - Parameter faultInjection: arm the process's kill points, if the environment sets any.
    init(base: UnsafeMutableRawPointer, layout: _Layout, faultInjection: Bool = false) {
        self.base = base
        self.layout = layout
        #if SHMLRU_TESTING
        _faults = faultInjection ? _FaultInjection.fromEnvironment.map { Unmanaged.passUnretained($0) } : nil
        #endif
    }

    // MARK: Header

    var lock: UnsafeMutableRawPointer { base + _Layout.H.lock }
    /// A word of the header's list state by name (`s.count`, `s.head`, `s.sieveHand`
    /// …: the names are `_ListState`'s), read and written relaxed, under the lock.
    /// The key path is a literal at every use, so an optimised build folds it to
    /// one load or store at the field's offset.
    @inline(__always)
    subscript(dynamicMember field: KeyPath<_ListState, Int>) -> UInt32 {
        get { load(_ListState()[keyPath: field]) }
        nonmutating set { store(_ListState()[keyPath: field], newValue) }
    }
    var generation: UInt32 {
        get { cshm_load_acquire_u32(u32(_Layout.H.generation)) }
        nonmutating set { cshm_store_release_u32(u32(_Layout.H.generation), newValue) }
    }
    var indexSeqPointer: UnsafeMutablePointer<UInt32> { u32(_Layout.H.indexSeq) }
    var changeSeqPointer: UnsafeMutablePointer<UInt32> { u32(_Layout.H.changeSeq) }
    var changeWaitersPointer: UnsafeMutablePointer<UInt32> { u32(_Layout.H.changeWaiters) }

    @inline(__always) func bumpStat(_ offset: Int, by amount: UInt64 = 1) {
        store64(offset, load64(offset) &+ amount)  // under the lock
    }

    /// Announces a change to listeners, under the lock: bumps the change sequence
    /// (a plain increment: only lock holders write it). `ShmLRU._withLock` wakes
    /// the futex waiters after unlocking: the unlock's atomic exchange orders this
    /// store before its load of the waiter count, so a listener that registered
    /// after that load sees the new sequence and does not sleep (no lost wake-up),
    /// and the set pays no second locked instruction.
    @inline(__always)
    func publishChange() {
        cshm_store_release_u32(changeSeqPointer, cshm_load_relaxed_u32(changeSeqPointer) &+ 1)
    }

    /// Wakes the listeners waiting on the change sequence, if any (after unlocking).
    @inline(__always)
    func wakeChangeWaiters() {
        if cshm_load_acquire_u32(changeWaitersPointer) != 0 {
            _ = cshm_futex_wake(changeSeqPointer, Int32.max)
        }
    }

    // MARK: Records

    @inline(__always) func isSlot(_ slot: UInt32) -> Bool { Int(slot) < layout.capacity }
    @inline(__always) func record(_ slot: UInt32) -> UnsafeMutableRawPointer { base + layout.recordOffset(slot) }

    @inline(__always) func prev(_ slot: UInt32) -> UInt32 { load(layout.recordOffset(slot) &+ _Layout.R.prev) }
    @inline(__always) func next(_ slot: UInt32) -> UInt32 { load(layout.recordOffset(slot) &+ _Layout.R.next) }
    @inline(__always) func setPrev(_ slot: UInt32, _ value: UInt32) { store(layout.recordOffset(slot) &+ _Layout.R.prev, value) }
    @inline(__always) func setNext(_ slot: UInt32, _ value: UInt32) { store(layout.recordOffset(slot) &+ _Layout.R.next, value) }
    @inline(__always) func hash(_ slot: UInt32) -> UInt32 { load(layout.recordOffset(slot) &+ _Layout.R.hash) }
    @inline(__always) func shareKey(_ slot: UInt32) -> UInt32 { load(layout.recordOffset(slot) &+ _Layout.R.share) }
    @inline(__always) func setShareKey(_ slot: UInt32, _ value: UInt32) {
        store(layout.recordOffset(slot) &+ _Layout.R.share, value)
    }
    @inline(__always) func seqPointer(_ slot: UInt32) -> UnsafeMutablePointer<UInt32> {
        u32(layout.recordOffset(slot) &+ _Layout.R.seq)
    }
    @inline(__always) func meta(_ slot: UInt32) -> UInt32 { load(layout.recordOffset(slot) &+ _Layout.R.meta) }
    @inline(__always) func stamp(_ slot: UInt32) -> UInt64 { load64(layout.recordOffset(slot) &+ _Layout.R.stamp) }
    /// Stamps a record linked at the head (under the lock): bit 0 clear.
    @inline(__always) func setStamp(_ slot: UInt32, _ value: UInt64) {
        store64(layout.recordOffset(slot) &+ _Layout.R.stamp, value & ~_Layout.stampUsed)
    }
    /// Marks a record used at `now` without moving it (interval promotion, no lock):
    /// one 8-byte store into the record's header line, which the read just loaded.
    @inline(__always) func markUsed(_ slot: UInt32, now: UInt64) {
        store64(layout.recordOffset(slot) &+ _Layout.R.stamp, now | _Layout.stampUsed)
    }
    @inline(__always) func isMarkedUsed(stamp: UInt64) -> Bool { stamp & _Layout.stampUsed != 0 }
    /// A record's last use, in CLOCK_MONOTONIC nanoseconds: its stamp without the policy's bits.
    @inline(__always) func lastUse(_ slot: UInt32) -> UInt64 { stamp(slot) & layout.stampTimeMask }
    @inline(__always) func payload(_ slot: UInt32) -> UnsafeMutableRawPointer {
        base + (layout.recordOffset(slot) &+ _Layout.R.payload)
    }
    @inline(__always) func isLive(meta: UInt32) -> Bool { meta >> 24 == _Layout.stateLive }
    @inline(__always) func length(meta: UInt32) -> Int { Int(meta & _Layout.lengthMask) }

    /// Rewrites a record's identity and value inside its seqlock (under the lock).
    /// Readers that overlap see an odd or changed sequence and retry.
    @inline(__always)  // its callers hold the segment in registers: no stack copy of it per write
    func writeRecord(_ slot: UInt32, hash: UInt32, state: UInt32, value: UnsafeRawBufferPointer) {
        withSeqlockWrite(slot) {
            let offset = layout.recordOffset(slot)
            store(offset &+ _Layout.R.hash, hash)
            if let source = value.baseAddress, value.count > 0 {
                #if SHMLRU_TESTING
                if let faults {  // tests: die with half the payload written
                    let half = value.count / 2
                    payload(slot).copyMemory(from: source, byteCount: half)
                    faults.reach(.recordTorn)
                    (payload(slot) + half).copyMemory(from: source + half, byteCount: value.count - half)
                } else {
                    payload(slot).copyMemory(from: source, byteCount: value.count)
                }
                #else
                payload(slot).copyMemory(from: source, byteCount: value.count)
                #endif
            }
            store(offset &+ _Layout.R.meta, state << 24 | UInt32(value.count))
        }
    }

    /// Marks a record free (under the lock), inside its seqlock.
    func markFree(_ slot: UInt32) {
        withSeqlockWrite(slot) { store(layout.recordOffset(slot) &+ _Layout.R.meta, _Layout.stateFree << 24) }
    }

    /// Runs `body`, which writes the record, inside the record's seqlock (under the lock).
    @inline(__always)
    func withSeqlockWrite<R>(_ slot: UInt32, _ body: () -> R) -> R { _seqlockWrite(seqPointer(slot), body) }
}

/// The names of the header's list-state words (UInt32, written under the lock),
/// each its offset in `_Layout.H`: `_Segment` reads and writes them by these names.
struct _ListState {
    var count: Int { _Layout.H.count }
    var freeCount: Int { _Layout.H.freeCount }
    var freeHead: Int { _Layout.H.freeHead }
    var head: Int { _Layout.H.lruHead }
    var tail: Int { _Layout.H.lruTail }
    // The eviction policies' words: in their files (Policy/), as extensions.
}
