import CShm
import Glibc
import Synchronization

// The per-key lock table in the store segment (layout in _StoreLayout.swift).
//
// Each lock slot is bound to a key (kind + UTF-8 bytes, compared in full) and
// stays bound after a release, so that the next lock of a hot key finds it
// again without the table mutex. Probing is linear from hash % lockSlots;
// idle slots are unbound (left as tombstones, trimmed when the next slot is
// empty) only when a new key finds no free slot.
//
// The lock itself is one 64-bit word per slot (`_LockWord`): the holder's PID,
// a grant counter (the token is PID + counter), and two bits: `slow` (someone
// waits, or the next taker must be told that the holder died: both taking and
// releasing go through the table mutex) and `closed` (the slot is being
// unbound). Uncontended, a lock is one CAS free -> held and an unlock one CAS
// held -> free, lock-free: the prober checks the slot's binding generation (a
// seqlock: odd while a key is bound or unbound) around its key comparison and
// its read of the word, and the counter moves on at every grant, unbind and
// bind, so a CAS on a word read under a stale binding fails.
//
// Contended, a waiter sets `slow` (CAS, under the table mutex) and queues a
// waiter entry with an arrival stamp from the slot (the monotonic time it
// queued, made strictly increasing: the line's order and its wait); the
// holder's release CAS then fails, and it releases under the mutex. Waiters are
// served in arrival order among themselves, but a waiter asleep costs a futex
// wake-up (tens of µs under a hypervisor) to take the lock, so a release does not
// hand it to the earliest waiter unless that one has waited `fairnessNanoseconds`
// (or must be told that the holder died): it frees the word (keeping `slow`) and
// rings the earliest waiter only, and an acquirer that is running meanwhile (not
// queued: the lock-free path, or a newcomer under the mutex) takes it: barging,
// bounded by that window, as Linux's and WebKit's parking locks do. The woken
// waiter takes the free lock only while it is the earliest (FIFO among the
// queued): with one CAS and no mutex when the word is still the free word its
// release left for it (the ring marks the entry with that word's counter:
// `claimRung`), else under the mutex; otherwise it sleeps again; once it has waited the window, the next
// release hands the lock to it directly: it writes the new holder's word and the
// entry's grant, then rings one futex word (the entry's own for a blocked thread,
// its process's doorbell for async waiters). Nobody else wakes. The holder of a
// lock that async callers of its own process wait for passes it to the next of
// them without a release (`passOn`, one CAS; see _AsyncLockWaiter).
//
// The holder is a process (PID in the word, its start time in the slot's
// holder record, written just after the CAS and valid only while its token
// field equals the word's token: a record that is not (yet) valid means "start
// time unknown", which is alive for as long as the PID exists; issue 24's
// rule). Waiters check every `livenessCheck` that the holder lives; a dead
// holder's lock goes to the next waiter, flagged (unless the "holder" was a
// waiter granted the lock that died before it claimed it: it never held it).
// Everything but the two fast CASes runs under the table's robust mutex,
// whose waits honour the caller's deadline; a process that died holding it is
// repaired after (bindings half changed are unbound, a hand-off cut between
// the word and the grant is completed, dead waiters and holders cleared).

/// The lock word of a slot: bits 0-31 the holder's PID (0: free), 32-61 the
/// grant counter, 62 `closed`, 63 `slow`. A held lock's token is the word
/// without the two flag bits.
enum _LockWord {
    static let pidMask: UInt64 = 0xFFFF_FFFF
    static let counterUnit: UInt64 = 1 << 32
    static let counterMask: UInt64 = 0x3FFF_FFFF << 32
    static let tokenMask: UInt64 = pidMask | counterMask
    static let closed: UInt64 = 1 << 62
    static let slow: UInt64 = 1 << 63

    @inline(__always) static func pid(_ word: UInt64) -> Int32 { Int32(bitPattern: UInt32(truncatingIfNeeded: word)) }
    /// The counter moved on by one, no holder, no flags.
    @inline(__always) static func bumped(_ word: UInt64) -> UInt64 { ((word & counterMask) &+ counterUnit) & counterMask }
    /// The token of the next grant, to `pid`.
    @inline(__always) static func grant(after word: UInt64, to pid: Int32) -> UInt64 {
        bumped(word) | UInt64(UInt32(bitPattern: pid))
    }
}

final class _LockTable: @unchecked Sendable {
    let segment: _StoreSegment
    let mutex: _RobustMutex
    /// The handle's lock timeout in ns (-1: none): the default deadline of a wait.
    let defaultTimeoutNanoseconds: Int64
    /// Where a key's probing starts (replaceable: tests force collisions).
    let hash: @Sendable ([UInt8]) -> UInt64
    /// The same hash over bytes in place (the lock-free path allocates
    /// nothing); nil for the default FNV-1a 64, computed inline.
    let hashBytes: (@Sendable (UnsafeBufferPointer<UInt8>) -> UInt64)?
    /// The by-key path's one-entry hint (`Hint`: slot + 1, binding generation;
    /// 0: none): the slot the last key found by probing was bound in. A lock or
    /// unlock by key tries it first: its generation unchanged and its key (kind,
    /// length, bytes) equal to the caller's, it skips the hash and the probe. The
    /// caller's generation check after its read of the word validates the key
    /// comparison too (seqlock), so a slot rebound meanwhile is never taken for
    /// the key's; a miss probes and replaces the hint.
    private let lastHint = Atomic<UInt64>(0)
    /// The by-key path's first hint: `lastHint`'s slot remembered by the key's
    /// `String` value, so that the same key's next lock or unlock reads no key
    /// bytes (see _KeyStringHint.swift).
    private let keyHint = _KeyStringHint()

    init(
        segment: _StoreSegment, mutex: _RobustMutex, defaultTimeoutNanoseconds: Int64,
        hash: (@Sendable ([UInt8]) -> UInt64)?
    ) {
        self.segment = segment
        self.mutex = mutex
        self.defaultTimeoutNanoseconds = defaultTimeoutNanoseconds
        if let hash {
            self.hash = hash
            hashBytes = { hash(Array($0)) }
        } else {
            self.hash = { _fnv1a64($0) }
            hashBytes = nil
        }
    }

    @inline(__always) private func hash(of bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        if let hashBytes { return hashBytes(bytes) }
        return _fnv1a64(bytes)
    }

    /// How often a blocked waiter checks that the holder is alive.
    static let livenessCheckNanoseconds: UInt64 = 50_000_000
    /// How long `tryLock` may wait for the table's own mutex (a peer holds it for
    /// a table update only): short, so that a stopped or forged holder of that
    /// mutex cannot make a try block.
    static let tryTableWaitNanoseconds: UInt64 = 500_000
    /// How long a waiter that gives up (timeout, cancellation) may wait for the
    /// table mutex to leave the queue, past its own deadline.
    static let leaveTableWaitNanoseconds: UInt64 = 1_000_000_000
    /// How long a blocking lock spins on a held word (nobody queued) before it
    /// queues and sleeps: a lock held for a few hundred ns is taken without a
    /// system call. Async locks spin a quarter of it (bounded: the cooperative
    /// thread is back at once).
    static let spinNanoseconds: UInt64 = 4_000
    /// The fairness window: a release hands the lock directly to the earliest
    /// waiter once it has waited this long; before, it frees the lock for a running
    /// acquirer and wakes that waiter (barging, see above). Also the longest run
    /// of same-process passes (`passOn`) while others wait.
    static let fairnessNanoseconds: UInt64 = 1_000_000
    static let kindLock: UInt32 = 0
    static let kindLoad: UInt32 = 1

    struct Identity: Sendable {
        var kind: UInt32
        var hash: UInt64
        var key: [UInt8]
        var length: UInt32 { UInt32(truncatingIfNeeded: key.count) }
    }

    struct Grant: Sendable {
        var id: UInt64
        var previousHolderDied: Bool
    }

    enum Entry {
        case acquired(Grant)
        case busy
        case queued(Int)
        case noRoom
    }

    /// A key as the lock-free path probes for it: its bytes in place.
    struct Probe {
        var kind: UInt32
        var hash: UInt64
        var bytes: UnsafeRawBufferPointer
    }

    /// What the lock-free path found.
    enum Fast {
        case acquired(Grant)
        /// Held: spinning may pay (a release frees it for a running acquirer).
        case held
        /// A flag, no binding, a binding changing, or (without `barge`) free with
        /// waiters: the table mutex decides.
        case slow
    }

    private var layout: _StoreLayout { segment.layout }

    func identity(_ key: String, kind: UInt32 = _LockTable.kindLock, _ operation: @autoclosure () -> String) throws(ShmError) -> Identity {
        let bytes = Array(key.utf8)
        guard bytes.count <= layout.lockKeyCapacity else {
            throw ShmError(
                .invalidArgument, operation(),
                detail: "a lock key is at most \(layout.lockKeyCapacity) UTF-8 bytes (the record size), not \(bytes.count)")
        }
        return Identity(kind: kind, hash: hash(bytes), key: bytes)
    }

    @inline(__always) private func fault(_ point: _FaultInjection.Point) {
        #if SHMLRU_TESTING
        if let faults = _FaultInjection.fromEnvironment { faults.reach(point) }
        #endif
    }

    @inline(__always) private func word(ofSlot slot: Int) -> UnsafeMutablePointer<UInt64> {
        segment.u64(segment.slot(slot, _StoreLayout.L.word))
    }

    @inline(__always) private func generation(ofSlot slot: Int) -> UnsafeMutablePointer<UInt32> {
        segment.u32(segment.slot(slot, _StoreLayout.L.generation))
    }

    // MARK: Table lock

    /// The deadline of a wait of `timeout` from now (nil: the handle's lock timeout).
    func deadline(_ timeout: Duration?) -> UInt64? {
        if let timeout { return _deadline(after: timeout) }
        if defaultTimeoutNanoseconds < 0 { return nil }
        return _saturatingAdd(_monotonicNanoseconds(), UInt64(defaultTimeoutNanoseconds))
    }

    /// Runs `body` under the table mutex, waiting for it until `deadline`
    /// (monotonic ns; nil: for ever).
    func locked<R>(until deadline: UInt64?, _ operation: @autoclosure () -> String, _ body: () throws(ShmError) -> R)
        throws(ShmError) -> R
    {
        var timeout: Int64 = -1
        if let deadline {
            let now = _monotonicNanoseconds()
            timeout = Int64(clamping: deadline > now ? deadline - now : 0)
        }
        let acquired: _RobustMutex.Acquired
        do { acquired = try mutex.lock(timeoutNanoseconds: timeout) } catch {
            throw ShmError(
                error.code, operation(), errno: error.errno,
                detail: "the lock table's own mutex: " + (error.code == .lockTimeout ? "busy past the deadline" : (error.detail ?? "")))
        }
        defer { mutex.unlock() }
        if acquired == .previousOwnerDied {
            repairLocked()
            mutex.markConsistent()
        }
        return try body()
    }

    /// `locked(until:)` with the handle's lock timeout.
    func locked<R>(_ operation: @autoclosure () -> String, _ body: () throws(ShmError) -> R) throws(ShmError) -> R {
        try locked(until: deadline(nil), operation(), body)
    }

    // MARK: Lock-free path

    /// The slot bound to `identity` and the binding generation it was seen
    /// under (to check again after reading the word); nil when no slot is bound
    /// to it (or a binding on the way was changing: the mutex path decides).
    @inline(__always) private func probe(_ identity: Probe) -> (slot: Int, generation: UInt32)? {
        let count = layout.lockSlots
        guard count > 0, identity.bytes.count <= layout.lockKeyCapacity else { return nil }
        var index = Int(identity.hash % UInt64(count))
        for _ in 0..<count {
            let generation = cshm_load_acquire_u32(self.generation(ofSlot: index))
            let state = segment.load(segment.slot(index, _StoreLayout.L.state))
            if generation & 1 != 0 { return nil }  // a binding changing: let the mutex path look
            if state == _StoreLayout.slotEmpty { return nil }
            if state == _StoreLayout.slotBound, matches(index, identity.kind, identity.hash, identity.bytes, racy: true) {
                return (index, generation)
            }
            index = index + 1 == count ? 0 : index + 1
        }
        return nil
    }

    /// One try of the lock-free path: one CAS free -> held when the key's slot is
    /// bound, free and nobody waits.
    func acquireFast(_ identity: Identity, me: _ProcessIdentity, barge: Bool = true) -> Fast {
        identity.key.withUnsafeBytes { acquireFast(Probe(kind: identity.kind, hash: identity.hash, bytes: $0), me: me, barge: barge) }
    }

    /// With `barge`, a free lock that waiters queue for is taken too (a release
    /// freed it for a running acquirer, see above), keeping `slow` so that this
    /// holder's release goes through the mutex to wake the next waiter; not when
    /// the slot's flags say the next taker must be told that the holder died.
    func acquireFast(_ identity: Probe, me: _ProcessIdentity, barge: Bool = true) -> Fast {
        guard let (slot, generation) = probe(identity) else { return .slow }
        return acquireFast(slot: slot, generation: generation, me: me, barge: barge)
    }

    /// A slot bound to a key, as `KeyLock` keeps it: slot + 1 in the low 32 bits,
    /// the binding generation it was seen under in the high 32 (0: none).
    typealias Hint = UInt64

    /// The hint of the slot bound to `identity` (lock-free; 0: none, or changing).
    func hint(_ identity: Identity) -> Hint {
        guard let (slot, generation) = identity.key.withUnsafeBytes({ probe(Probe(kind: identity.kind, hash: identity.hash, bytes: $0)) })
        else { return 0 }
        // The key comparison was read under this generation: still it, or no hint.
        cshm_fence_acquire()
        guard cshm_load_relaxed_u32(self.generation(ofSlot: slot)) == generation else { return 0 }
        return UInt64(generation) << 32 | UInt64(slot + 1)
    }

    /// The slot and generation of `hint` (a slot in range, an even generation),
    /// not yet checked against the slot: the callers' reads of the slot are
    /// followed by that one check (the seqlock's second read; the generation only
    /// moves on, so one unchanged after the reads means no bind or unbind began
    /// since the hint was taken, and the slot is still the key's).
    @inline(__always) private func slot(of hint: Hint) -> (slot: Int, generation: UInt32)? {
        let slot = Int(truncatingIfNeeded: hint & 0xFFFF_FFFF) &- 1
        let generation = UInt32(truncatingIfNeeded: hint >> 32)
        guard slot >= 0, slot < layout.lockSlots, generation & 1 == 0 else { return nil }
        return (slot, generation)
    }

    /// `acquireFast` on a hinted slot: no hash, probe or key comparison (the
    /// binding generation stands for them). `.slow` when the hint is stale.
    @inline(__always) func acquireFast(hint: Hint, me: _ProcessIdentity) -> Fast {
        guard let (slot, generation) = slot(of: hint) else { return .slow }
        return acquireFast(slot: slot, generation: generation, me: me, barge: true)
    }

    /// `releaseFast` on a hinted slot.
    @inline(__always) func releaseFast(hint: Hint, id: UInt64) -> Bool {
        guard id & ~_LockWord.tokenMask == 0, _LockWord.pid(id) != 0, let (slot, generation) = slot(of: hint) else { return false }
        return releaseFast(slot: slot, generation: generation, id: id)
    }

    @inline(__always) private func acquireFast(slot: Int, generation: UInt32, me: _ProcessIdentity, barge: Bool) -> Fast {
        let word = word(ofSlot: slot)
        let observed = cshm_load_acquire_u64(word)
        let flags = cshm_load_relaxed_u32(segment.u32(segment.slot(slot, _StoreLayout.L.flags)))
        cshm_fence_acquire()
        guard cshm_load_relaxed_u32(self.generation(ofSlot: slot)) == generation else { return .slow }
        if observed & _LockWord.closed != 0 { return .slow }
        if _LockWord.pid(observed) != 0 { return .held }
        if observed & _LockWord.slow != 0, !barge || flags != 0 { return .slow }
        let token = _LockWord.grant(after: observed, to: me.pid)
        guard cshm_cas_u64(word, observed, token | (observed & _LockWord.slow)) else { return .held }
        fault(.keyLockTaken)
        writeHolder(slot, start: me.start, token: token)
        return .acquired(Grant(id: token, previousHolderDied: false))
    }

    /// The holder of `id` passes the lock to another lock call of its own process
    /// (an async caller queued behind it, see _AsyncLockWaiter): one CAS to a new
    /// token of this process, lock-free (the holder is the only writer of a held
    /// word but for the `slow` bit, and a CAS sees that), `slow` kept. Nil when the
    /// token does not hold the lock, or the slot's flags need the mutex path.
    func passOn(_ identity: Identity, id: UInt64, me: _ProcessIdentity) -> Grant? {
        identity.key.withUnsafeBytes { bytes -> Grant? in
            let probe = Probe(kind: identity.kind, hash: identity.hash, bytes: bytes)
            guard id & ~_LockWord.tokenMask == 0, _LockWord.pid(id) == me.pid, let (slot, generation) = self.probe(probe) else {
                return nil
            }
            let word = word(ofSlot: slot)
            let observed = cshm_load_acquire_u64(word)
            let flags = cshm_load_relaxed_u32(segment.u32(segment.slot(slot, _StoreLayout.L.flags)))
            cshm_fence_acquire()
            guard cshm_load_relaxed_u32(self.generation(ofSlot: slot)) == generation, observed & _LockWord.closed == 0,
                observed & _LockWord.tokenMask == id, flags == 0
            else { return nil }
            let token = _LockWord.grant(after: observed, to: me.pid)
            guard cshm_cas_u64(word, observed, token | (observed & _LockWord.slow)) else { return nil }
            fault(.keyLockTaken)
            writeHolder(slot, start: me.start, token: token)
            return Grant(id: token, previousHolderDied: false)
        }
    }

    /// The lock-free path with a bounded spin while the lock is held and nobody
    /// waits (`budget` ns; 0: one try). Nil: take the mutex path.
    func acquireSpinning(_ identity: Identity, me: _ProcessIdentity, budget: UInt64) -> Grant? {
        identity.key.withUnsafeBytes { acquireSpinning(Probe(kind: identity.kind, hash: identity.hash, bytes: $0), me: me, budget: budget) }
    }

    /// `acquireSpinning` on `key`'s UTF-8 bytes in place (the hinted slot first,
    /// see `lastHint`); nil also when the string is not contiguous UTF-8 or too
    /// long (the mutex path decides).
    @inline(__always)
    func acquireSpinning(
        _ key: String, kind: UInt32 = _LockTable.kindLock, me: _ProcessIdentity, budget: UInt64, barge: Bool = true
    ) -> Grant? {
        if kind == _LockTable.kindLock, let (slot, generation) = hinted(key) {
            return acquireSpinning(slot: slot, generation: generation, me: me, budget: budget, barge: barge)
        }
        return acquireSpinning(bytesOf: key, kind: kind, me: me, budget: budget, barge: barge)
    }

    /// `acquireSpinning` by the key's bytes (`keyHint` missed).
    @inline(never)
    private func acquireSpinning(bytesOf key: String, kind: UInt32, me: _ProcessIdentity, budget: UInt64, barge: Bool) -> Grant? {
        key.utf8.withContiguousStorageIfAvailable { buffer -> Grant? in
            guard buffer.count <= layout.lockKeyCapacity, let (slot, generation) = locate(kind, UnsafeRawBufferPointer(buffer), key)
            else {
                return nil
            }
            return acquireSpinning(slot: slot, generation: generation, me: me, budget: budget, barge: barge)
        } ?? nil
    }

    /// The slot bound to key `bytes` of `kind` and the generation it was seen
    /// under, as `probe`, trying the hinted slot first (its key compared in
    /// full; no hash computed on a hit). The caller checks the generation again
    /// after reading the word.
    /// The same key found in `lastHint`'s slot is remembered by its `String`
    /// too (`keyHint`, lock keys only).
    @inline(__always) private func locate(_ kind: UInt32, _ bytes: UnsafeRawBufferPointer, _ key: String)
        -> (slot: Int, generation: UInt32)?
    {
        let last = lastHint.load(ordering: .relaxed)
        if let (slot, generation) = slot(of: last),
            cshm_load_acquire_u32(self.generation(ofSlot: slot)) == generation,
            holdsKey(slot, kind, bytes)
        {
            if kind == _LockTable.kindLock { keyHint.remember(key, last) }
            return (slot, generation)
        }
        let hash = hash(of: bytes.assumingMemoryBound(to: UInt8.self))
        guard let (slot, generation) = probe(Probe(kind: kind, hash: hash, bytes: bytes)) else { return nil }
        lastHint.store(UInt64(generation) << 32 | UInt64(slot + 1), ordering: .relaxed)
        return (slot, generation)
    }

    /// The slot `keyHint` names for `key` (a lock key) when its binding
    /// generation is unchanged: no hash, probe or key bytes read. The caller
    /// checks the generation again after reading the word.
    @inline(__always) private func hinted(_ key: String) -> (slot: Int, generation: UInt32)? {
        guard let (slot, generation) = slot(of: keyHint.hint(for: key)),
            cshm_load_acquire_u32(self.generation(ofSlot: slot)) == generation
        else { return nil }
        return (slot, generation)
    }

    /// Whether bound slot `slot` (in range) holds key `bytes` of `kind`: kind,
    /// length and bytes, read racily (the caller's generation check decides).
    @inline(__always) private func holdsKey(_ slot: Int, _ kind: UInt32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        matches(slot, kind, nil, bytes, racy: true)
    }

    func acquireSpinning(_ identity: Probe, me: _ProcessIdentity, budget: UInt64, barge: Bool = true) -> Grant? {
        guard let (slot, generation) = probe(identity) else { return nil }
        return acquireSpinning(slot: slot, generation: generation, me: me, budget: budget, barge: barge)
    }

    /// `acquireSpinning` on a slot found under `generation`: one try, then the
    /// spin (out of line: an uncontended lock carries none of its code).
    @inline(__always) private func acquireSpinning(slot: Int, generation: UInt32, me: _ProcessIdentity, budget: UInt64, barge: Bool)
        -> Grant?
    {
        switch acquireFast(slot: slot, generation: generation, me: me, barge: barge) {
        case .acquired(let grant): return grant
        case .slow: return nil
        case .held: return budget == 0 ? nil : spin(slot: slot, generation: generation, me: me, budget: budget, barge: barge)
        }
    }

    /// The spin of `acquireSpinning` while the lock is held.
    @inline(never)
    private func spin(slot: Int, generation: UInt32, me: _ProcessIdentity, budget: UInt64, barge: Bool) -> Grant? {
        var until: UInt64 = 0
        while true {
            switch acquireFast(slot: slot, generation: generation, me: me, barge: barge) {
            case .acquired(let grant): return grant
            case .slow: return nil
            case .held:
                if budget == 0 { return nil }
                let now = _monotonicNanoseconds()
                if until == 0 {
                    until = _saturatingAdd(now, budget)
                } else if now >= until {
                    return nil
                }
                for _ in 0..<32 { cshm_cpu_relax() }
            }
        }
    }

    /// Releases with one CAS held(`id`, nobody waiting) -> free. False: take the
    /// mutex path (waiters, a flag, or not this token).
    func releaseFast(_ identity: Identity, id: UInt64) -> Bool {
        identity.key.withUnsafeBytes { releaseFast(Probe(kind: identity.kind, hash: identity.hash, bytes: $0), id: id) }
    }

    /// `releaseFast` on `key`'s UTF-8 bytes in place (the hinted slot first).
    @inline(__always)
    func releaseFast(_ key: String, kind: UInt32 = _LockTable.kindLock, id: UInt64) -> Bool {
        guard id & ~_LockWord.tokenMask == 0, _LockWord.pid(id) != 0 else { return false }
        if kind == _LockTable.kindLock, let (slot, generation) = hinted(key) {
            return releaseFast(slot: slot, generation: generation, id: id)
        }
        return releaseFast(bytesOf: key, kind: kind, id: id)
    }

    /// `releaseFast` by the key's bytes (`keyHint` missed).
    @inline(never)
    private func releaseFast(bytesOf key: String, kind: UInt32, id: UInt64) -> Bool {
        key.utf8.withContiguousStorageIfAvailable { buffer -> Bool in
            guard buffer.count <= layout.lockKeyCapacity, let (slot, generation) = locate(kind, UnsafeRawBufferPointer(buffer), key)
            else {
                return false
            }
            return releaseFast(slot: slot, generation: generation, id: id)
        } ?? false
    }

    func releaseFast(_ identity: Probe, id: UInt64) -> Bool {
        guard id & ~_LockWord.tokenMask == 0, _LockWord.pid(id) != 0, let (slot, generation) = probe(identity) else { return false }
        return releaseFast(slot: slot, generation: generation, id: id)
    }

    @inline(__always) private func releaseFast(slot: Int, generation: UInt32, id: UInt64) -> Bool {
        let word = word(ofSlot: slot)
        guard cshm_load_acquire_u64(word) == id else { return false }
        cshm_fence_acquire()
        guard cshm_load_relaxed_u32(self.generation(ofSlot: slot)) == generation else { return false }
        return cshm_cas_u64(word, id, id & _LockWord.counterMask)
    }

    /// Writes the holder record of a grant: its start time, valid for `token`
    /// (token field cleared first, so a reader never pairs an old token with a
    /// new start time).
    /// When the record already holds `start` (this process held the lock last,
    /// the usual case for a hot key), only the token field changes: a reader
    /// that sees the new token reads that same start time.
    @inline(__always) private func writeHolder(_ slot: Int, start: UInt64, token: UInt64) {
        let startField = segment.u64(segment.slot(slot, _StoreLayout.L.start))
        let tokenField = segment.u64(segment.slot(slot, _StoreLayout.L.token))
        if cshm_load_relaxed_u64(startField) != start {
            cshm_store_relaxed_u64(tokenField, 0)
            cshm_fence_release()
            cshm_store_relaxed_u64(startField, start)
        }
        cshm_store_release_u64(tokenField, token)
    }

    /// The holder of `slot` (nil: free): the word's PID, and the holder record's
    /// start time when the record belongs to the word's token (else 0, unknown).
    func holder(ofSlot slot: Int) -> (identity: _ProcessIdentity, token: UInt64)? {
        guard slot >= 0, slot < layout.lockSlots else { return nil }
        let observed = cshm_load_acquire_u64(word(ofSlot: slot))
        let pid = _LockWord.pid(observed)
        guard pid != 0, observed & _LockWord.closed == 0 else { return nil }
        let token = observed & _LockWord.tokenMask
        let tokenField = segment.u64(segment.slot(slot, _StoreLayout.L.token))
        let before = cshm_load_acquire_u64(tokenField)
        let start = cshm_load_relaxed_u64(segment.u64(segment.slot(slot, _StoreLayout.L.start)))
        cshm_fence_acquire()
        let after = cshm_load_relaxed_u64(tokenField)
        let known = before == token && after == token
        return (_ProcessIdentity(pid: pid, start: known ? start : 0), token)
    }

    // MARK: Blocking acquire and release

    /// Takes the lock, blocking the thread until `deadline` (monotonic ns; nil:
    /// for ever) unless `tryOnly`. Nil when `tryOnly` and the lock is busy.
    func acquire(
        _ identity: Identity, tryOnly: Bool, deadline: UInt64?, isCancelled: () -> Bool, _ operation: @autoclosure () -> String
    ) throws(ShmError) -> Grant? {
        let me = _ProcessIdentity.current
        // The spin never outlasts the caller's deadline (a timeout of 0 tries once).
        var budget = tryOnly ? 0 : _LockTable.spinNanoseconds
        if let deadline {
            let now = _monotonicNanoseconds()
            budget = min(budget, deadline > now ? deadline - now : 0)
        }
        if let grant = acquireSpinning(identity, me: me, budget: budget) { return grant }
        let first = tryOnly ? _saturatingAdd(_monotonicNanoseconds(), _LockTable.tryTableWaitNanoseconds) : deadline
        var entry = try locked(until: first, operation()) { () throws(ShmError) -> Entry in
            try enterLocked(identity, me: me, tryOnly: tryOnly, doorbell: nil, operation())
        }
        while true {
            switch entry {
            case .acquired(let grant): return grant
            case .busy: return nil
            case .noRoom:
                // Every waiter entry is in use: look again shortly.
                if let deadline, _monotonicNanoseconds() >= deadline {
                    throw ShmError(.lockTimeout, operation(), detail: "the key's lock was not free in time (the waiter table was full)")
                }
                if isCancelled() { throw ShmError(.cancelled, operation(), detail: "the waiting task was cancelled") }
                usleep(1_000)
                entry = try locked(until: deadline, operation()) { () throws(ShmError) -> Entry in
                    try enterLocked(identity, me: me, tryOnly: false, doorbell: nil, operation())
                }
            case .queued(let index):
                return try waitForGrant(index, me: me, deadline: deadline, isCancelled: isCancelled, operation())
            }
        }
    }

    /// Sleeps on waiter entry `index`'s word until the lock is granted to it, the
    /// deadline passes or the wait is cancelled (then it leaves the queue).
    private func waitForGrant(
        _ index: Int, me: _ProcessIdentity, deadline: UInt64?, isCancelled: () -> Bool, _ operation: @autoclosure () -> String
    ) throws(ShmError) -> Grant {
        let word = segment.u32(segment.waiter(index, _StoreLayout.W.word))
        var nextCheck = _saturatingAdd(_monotonicNanoseconds(), _LockTable.livenessCheckNanoseconds)
        // A short spin first: a hand-off (or a free lock, this entry being the
        // earliest) soon after queueing is had without sleeping.
        let spinUntil = _saturatingAdd(_monotonicNanoseconds(), _LockTable.spinNanoseconds)
        while _monotonicNanoseconds() < spinUntil {
            if let grant = takeIfFree(index, me: me) { return grant }
            for _ in 0..<32 { cshm_cpu_relax() }
        }
        while true {
            let observed = cshm_load_acquire_u32(word)
            if let grant = takeIfFree(index, me: me) { return grant }
            let now = _monotonicNanoseconds()
            let expired = deadline.map { now >= $0 } ?? false
            if expired || isCancelled() {
                let leave = _saturatingAdd(now, _LockTable.leaveTableWaitNanoseconds)
                if let grant = try locked(until: leave, operation(), { () throws(ShmError) -> Grant? in leaveLocked(index, me: me) }) {
                    return grant  // granted as we gave up: it is ours
                }
                if expired { throw ShmError(.lockTimeout, operation(), detail: "the key's lock was not free in time") }
                throw ShmError(.cancelled, operation(), detail: "the waiting task was cancelled")
            }
            if now >= nextCheck {
                nextCheck = _saturatingAdd(now, _LockTable.livenessCheckNanoseconds)
                try locked(until: deadline, operation()) { () throws(ShmError) in checkHolderLocked(ofWaiter: index) }
                continue
            }
            var wait = nextCheck - now
            if let deadline { wait = min(wait, deadline > now ? deadline - now : 0) }
            _ = cshm_futex_wait(word, observed, Int64(clamping: wait))
        }
    }

    /// For a queued waiter (entry `index`, ours): its grant if the lock was handed
    /// to it; else, if the key's lock is free (a release freed it and rang this
    /// entry), takes it under the table mutex when this entry is the earliest.
    /// The mutex is waited for briefly (`tryTableWaitNanoseconds`): nil when busy,
    /// the caller looks again at its next wake-up (its deadline is its own).
    func takeIfFree(_ index: Int, me: _ProcessIdentity) -> Grant? {
        if let grant = claim(index, me: me) { return grant }
        guard isFree(slotOfWaiter: index) else { return nil }
        if let grant = claimRung(index, me: me) { return grant }
        let bound = _saturatingAdd(_monotonicNanoseconds(), _LockTable.tryTableWaitNanoseconds)
        return (try? locked(until: bound, "") { () throws(ShmError) -> Grant? in retryLocked(index, me: me) }) ?? nil
    }

    /// The ring mark of free word `free` (see `claimRung`): bit 31 set, bits 1-30
    /// the word's grant counter, bit 0 (the holder-died flag) clear.
    @inline(__always) static func rungMark(_ free: UInt64) -> UInt32 {
        0x8000_0000 | UInt32(truncatingIfNeeded: (free & _LockWord.counterMask) >> 31)
    }

    /// For a queued waiter (entry `index`, ours) that a release rang: takes the
    /// free lock with one CAS, without the table mutex, when the word is still
    /// the free word that release left for it. `releaseLocked` marks the entry
    /// it rings (in its flags, `rungMark`) with that word's grant counter before
    /// it frees the word, under the table mutex, choosing the earliest waiter:
    /// a CAS from that very word (the counter moves on at every grant, so the
    /// word cannot have been taken and freed again meanwhile) takes the lock
    /// while this entry is still the earliest (nobody queues ahead of an earlier
    /// arrival), so FIFO among the queued holds. Nil (the mutex path decides):
    /// no mark, or a mark of another word; a death to tell (slot flags); a
    /// changed word. The entry leaves the queue as a granted one does (`claim`:
    /// its tag only); `slow` is kept, so the release goes through the mutex
    /// (which clears it if nobody waits).
    func claimRung(_ index: Int, me: _ProcessIdentity) -> Grant? {
        guard index >= 0, index < layout.waiterSlots else { return nil }
        let w = { [segment] (field: Int) in segment.waiter(index, field) }
        let tag = Int(cshm_load_acquire_u32(segment.u32(w(_StoreLayout.W.slot))))
        guard tag > 0, tag <= layout.lockSlots, waiterIdentity(index) == me else { return nil }
        let slot = tag - 1
        let word = word(ofSlot: slot)
        let observed = cshm_load_acquire_u64(word)
        guard _LockWord.pid(observed) == 0, observed & (_LockWord.closed | _LockWord.slow) == _LockWord.slow,
            cshm_load_relaxed_u32(segment.u32(w(_StoreLayout.W.flags))) == _LockTable.rungMark(observed),
            cshm_load_relaxed_u32(segment.u32(segment.slot(slot, _StoreLayout.L.flags))) == 0
        else { return nil }
        let token = _LockWord.grant(after: observed, to: me.pid)
        guard cshm_cas_u64(word, observed, token | _LockWord.slow) else { return nil }
        fault(.keyLockTaken)
        writeHolder(slot, start: me.start, token: token)
        cshm_store_release_u32(segment.u32(w(_StoreLayout.W.slot)), 0)
        return Grant(id: token, previousHolderDied: false)
    }

    /// Whether the lock waiter entry `index` queues for is free (lock-free peek).
    func isFree(slotOfWaiter index: Int) -> Bool {
        guard index >= 0, index < layout.waiterSlots else { return false }
        let tag = Int(cshm_load_acquire_u32(segment.u32(segment.waiter(index, _StoreLayout.W.slot))))
        guard tag > 0, tag <= layout.lockSlots else { return false }
        let observed = cshm_load_acquire_u64(word(ofSlot: tag - 1))
        return _LockWord.pid(observed) == 0 && observed & _LockWord.closed == 0
    }

    /// Under the table mutex, for waiter entry `index` (ours): its grant if the lock
    /// was handed to it; else the free lock when this entry is the earliest waiter
    /// (it leaves the queue); nil while the lock is held or others queued first.
    func retryLocked(_ index: Int, me: _ProcessIdentity) -> Grant? {
        guard index >= 0, index < layout.waiterSlots, waiterIdentity(index) == me else { return nil }
        if let grant = claim(index, me: me) { return grant }
        let tag = Int(segment.load(segment.waiter(index, _StoreLayout.W.slot)))
        guard tag > 0, tag <= layout.lockSlots else { return nil }
        let slot = tag - 1
        let f = { [segment] (field: Int) in segment.slot(slot, field) }
        let word = word(ofSlot: slot)
        for _ in 0..<1_000 {
            let observed = cshm_load_acquire_u64(word)
            guard _LockWord.pid(observed) == 0, observed & _LockWord.closed == 0 else { return nil }
            let (earliest, others) = waiters(of: slot)
            guard earliest == index else { return nil }
            let flags = segment.load(f(_StoreLayout.L.flags))
            let token = _LockWord.grant(after: observed, to: me.pid)
            guard cshm_cas_u64(word, observed, token | (others > 0 ? _LockWord.slow : 0)) else { continue }
            fault(.keyLockTaken)
            writeHolder(slot, start: me.start, token: token)
            segment.store(f(_StoreLayout.L.flags), flags & ~_StoreLayout.lockFlagHolderDied)
            clearWaiter(index)
            return Grant(id: token, previousHolderDied: flags & _StoreLayout.lockFlagHolderDied != 0)
        }
        return nil
    }

    /// Releases the lock held with token `id` (handing it to the next waiter):
    /// one CAS when nobody waits, else under the table mutex. Returns the waiter
    /// entry it was handed to, if any.
    @discardableResult
    func release(_ identity: Identity, id: UInt64, _ operation: @autoclosure () -> String) throws(ShmError) -> Int? {
        if releaseFast(identity, id: id) { return nil }
        return try locked(operation()) { () throws(ShmError) -> Int? in
            guard let slot = findSlot(identity, bind: false) else {
                throw ShmError(.lockNotHeld, operation(), detail: "the key is not locked")
            }
            let observed = cshm_load_acquire_u64(word(ofSlot: slot))
            guard id != 0, _LockWord.pid(observed) != 0, observed & _LockWord.closed == 0, observed & _LockWord.tokenMask == id else {
                throw ShmError(.lockNotHeld, operation(), detail: "the token does not hold the key's lock (wrong, or stale)")
            }
            return releaseLocked(slot, held: observed)
        }
    }

    /// A holder's release under the table mutex: while the earliest waiter is
    /// within the fairness window, frees the lock (keeping `slow`: waiters) for a
    /// running acquirer and rings that waiter only, which takes it if it is still
    /// free (`retryLocked`); else hands it to that waiter (`handOffLocked`).
    /// Returns the entry it was handed to, if any.
    private func releaseLocked(_ slot: Int, held: UInt64) -> Int? {
        guard let next = earliestWaiter(of: slot), mayBarge(slot, earliest: next) else {
            return handOffLocked(slot, from: held, holderDied: false)
        }
        let word = word(ofSlot: slot)
        // The holder (this process) is the only writer of a held word (a queueing
        // waiter's CAS of `slow` runs under this mutex).
        let free = (cshm_load_relaxed_u64(word) & _LockWord.counterMask) | _LockWord.slow
        // The entry rung may take this very word without the mutex (`claimRung`).
        cshm_store_relaxed_u32(segment.u32(segment.waiter(next, _StoreLayout.W.flags)), _LockTable.rungMark(free))
        cshm_store_release_u64(word, free)
        // Killed here: nobody rang; a waiter's liveness check hands the free lock on.
        fault(.keyLockHandingOff)
        ring(next)
        return nil
    }

    // MARK: Steps under the table mutex (and the lock-free claim)

    /// Takes the lock if it is free and nobody waits; else (unless `tryOnly`)
    /// queues a waiter entry whose grant rings `doorbell` (nil: its own word).
    func enterLocked(
        _ identity: Identity, me: _ProcessIdentity, tryOnly: Bool, doorbell: Int?, queued: UInt32 = 1,
        _ operation: @autoclosure () -> String
    ) throws(ShmError) -> Entry {
        guard let slot = findSlot(identity, bind: true) else {
            throw ShmError(.full, operation(), detail: "all \(layout.lockSlots) lock slots are bound to other keys")
        }
        let f = { [segment] (field: Int) in segment.slot(slot, field) }
        // A try has nobody to notice a dead holder later; a waiter's own liveness
        // checks do (reading /proc here on every contended call would hold the
        // table mutex through three system calls).
        if tryOnly { releaseIfHolderDead(slot, me: me) }
        let word = word(ofSlot: slot)
        // Fast lockers and releasers change the word concurrently: every change
        // here is a CAS on what was read.
        for _ in 0..<1_000_000 {
            let observed = cshm_load_acquire_u64(word)
            if observed & _LockWord.closed != 0 {
                // A bound slot is closed only when an unbind was cut short: reopen it.
                _ = cshm_cas_u64(word, observed, _LockWord.bumped(observed) | _LockWord.slow)
                continue
            }
            if _LockWord.pid(observed) == 0 {
                let earliest = earliestWaiter(of: slot)
                if let earliest, tryOnly || !mayBarge(slot, earliest: earliest) {
                    // Free with a waiter that goes first (a try never takes a lock
                    // others wait for; a waiter past the fairness window, or one
                    // to be told the holder died, is owed it): handed to it, once
                    // `slow` keeps fast lockers off the word.
                    if observed & _LockWord.slow == 0 {
                        _ = cshm_cas_u64(word, observed, observed | _LockWord.slow)
                    } else {
                        _ = handOffLocked(slot, from: observed, holderDied: false)
                    }
                    continue
                }
                // Free (a release freed it for a running acquirer, waiters asleep):
                // taken, `slow` kept while others wait.
                let flags = segment.load(f(_StoreLayout.L.flags))
                let token = _LockWord.grant(after: observed, to: me.pid)
                guard cshm_cas_u64(word, observed, token | (earliest != nil ? _LockWord.slow : 0)) else { continue }
                writeHolder(slot, start: me.start, token: token)
                segment.store(f(_StoreLayout.L.flags), flags & ~_StoreLayout.lockFlagHolderDied)
                return .acquired(Grant(id: token, previousHolderDied: flags & _StoreLayout.lockFlagHolderDied != 0))
            }
            if tryOnly { return .busy }  // held: the slot stays bound
            guard let index = freeWaiter() else { return .noRoom }
            // The releaser must come here: it hands the lock to this entry.
            if observed & _LockWord.slow == 0, !cshm_cas_u64(word, observed, observed | _LockWord.slow) { continue }
            fault(.keyLockQueued)
            // The arrival stamp: the time it queued, strictly increasing per slot
            // (the line's order; a stamp a little late only shortens the wait seen).
            let last = segment.load64(f(_StoreLayout.L.arrival))
            let arrival = max(_monotonicNanoseconds(), last == UInt64.max ? last : last &+ 1)
            segment.store64(f(_StoreLayout.L.arrival), arrival)
            let w = { [segment] (field: Int) in segment.waiter(index, field) }
            segment.store(w(_StoreLayout.W.pid), UInt32(bitPattern: me.pid))
            segment.store64(w(_StoreLayout.W.start), me.start)
            segment.store64(w(_StoreLayout.W.arrival), arrival)
            segment.store(w(_StoreLayout.W.doorbell), doorbell.map { UInt32($0 + 1) } ?? 0)
            segment.store64(w(_StoreLayout.W.grant), 0)
            segment.store(w(_StoreLayout.W.flags), 0)
            segment.store(w(_StoreLayout.W.queued), max(1, queued))
            cshm_store_release_u32(segment.u32(w(_StoreLayout.W.slot)), UInt32(slot + 1))
            return .queued(index)
        }
        throw ShmError(.lockTimeout, operation(), detail: "the key's lock word kept changing")
    }

    /// The grant of waiter entry `index` if the lock was handed to it: clears the
    /// entry (it is ours; nobody else writes a granted entry) and returns the grant.
    /// Lock-free: the hand-off wrote the grant under the table mutex before ringing.
    func claim(_ index: Int, me: _ProcessIdentity) -> Grant? {
        guard index >= 0, index < layout.waiterSlots else { return nil }
        let w = { [segment] (field: Int) in segment.waiter(index, field) }
        let grant = cshm_load_acquire_u64(segment.u64(w(_StoreLayout.W.grant)))
        guard grant != 0, waiterIdentity(index) == me else { return nil }
        let died = segment.load(w(_StoreLayout.W.flags)) & _StoreLayout.lockFlagHolderDied != 0
        // Only the tag: from here the entry is free, and whoever takes it next
        // writes every field before its tag (a peer may do so at once).
        cshm_store_release_u32(segment.u32(w(_StoreLayout.W.slot)), 0)
        return Grant(id: grant, previousHolderDied: died)
    }

    /// Takes waiter entry `index` (ours) out of the queue. If the lock was granted
    /// to it meanwhile, returns the grant instead: the caller holds the lock.
    func leaveLocked(_ index: Int, me: _ProcessIdentity) -> Grant? {
        guard index >= 0, index < layout.waiterSlots, waiterIdentity(index) == me else { return nil }
        if let grant = claim(index, me: me) { return grant }
        let tag = segment.load(segment.waiter(index, _StoreLayout.W.slot))
        clearWaiter(index)
        if tag != 0, Int(tag) <= layout.lockSlots { clearSlowIfIdle(Int(tag) - 1) }
        return nil
    }

    /// Sets how many lock calls waiter entry `index` (ours) stands for.
    func setQueued(_ index: Int, _ count: Int) {
        guard index >= 0, index < layout.waiterSlots else { return }
        cshm_store_relaxed_u32(segment.u32(segment.waiter(index, _StoreLayout.W.queued)), UInt32(clamping: max(1, count)))
    }

    /// For a waiter: hands the lock on if its holder died.
    func checkHolderLocked(ofWaiter index: Int) {
        guard index >= 0, index < layout.waiterSlots else { return }
        let tag = segment.load(segment.waiter(index, _StoreLayout.W.slot))
        guard tag != 0, Int(tag) <= layout.lockSlots else { return }
        let slot = Int(tag) - 1
        releaseIfHolderDead(slot, me: _ProcessIdentity.current)
        // Free with waiters for a liveness period (the woken waiter died, or its
        // wake-up was cut short): handed to the earliest (one that died is passed
        // on by the next check, unflagged).
        let observed = cshm_load_acquire_u64(word(ofSlot: slot))
        if _LockWord.pid(observed) == 0, observed & _LockWord.closed == 0, observed & _LockWord.slow != 0,
            earliestWaiter(of: slot) != nil
        {
            _ = handOffLocked(slot, from: observed, holderDied: false)
        }
    }

    /// Whether a running acquirer may take `slot`'s free lock past its earliest
    /// waiter `earliest`: not when the next taker must be told that the holder
    /// died, nor once that waiter has waited the fairness window.
    private func mayBarge(_ slot: Int, earliest: Int) -> Bool {
        guard segment.load(segment.slot(slot, _StoreLayout.L.flags)) & _StoreLayout.lockFlagHolderDied == 0 else { return false }
        let arrival = segment.load64(segment.waiter(earliest, _StoreLayout.W.arrival))
        let now = _monotonicNanoseconds()
        return now < arrival || now - arrival < _LockTable.fairnessNanoseconds
    }

    /// Releases `slot`'s holder and hands the lock to the earliest live waiter
    /// (telling it whether the holder died), or frees it when nobody waits
    /// (keeping `slow` while the next taker must be told the holder died).
    /// Returns the entry it was handed to.
    ///
    /// `expected` is the word the caller decided on: the releasing holder's, a
    /// dead holder's, or a free one. The word changes only from it (one CAS), so
    /// a lock a barging acquirer took since is never handed over its head (a
    /// fresh read here did that: two holders, a lost update, and the first
    /// one's unlock refused as not held).
    private func handOffLocked(_ slot: Int, from expected: UInt64, holderDied: Bool) -> Int? {
        let f = { [segment] (field: Int) in segment.slot(slot, field) }
        let word = word(ofSlot: slot)
        let observed = expected
        let flags = segment.load(f(_StoreLayout.L.flags)) | (holderDied ? _StoreLayout.lockFlagHolderDied : 0)
        let (next, others) = waiters(of: slot)
        // Every change of the word is a CAS on what was read: a held word's only
        // other writer is its holder (this process, or a dead one), but a free one
        // (with waiters) may be taken meanwhile by a barging acquirer, and then it
        // is that one's, and nothing is handed on here.
        guard let next else {
            let died = flags & _StoreLayout.lockFlagHolderDied != 0
            guard cshm_cas_u64(word, observed, (observed & _LockWord.counterMask) | (died ? _LockWord.slow : 0)) else { return nil }
            segment.store(f(_StoreLayout.L.flags), flags)
            return nil
        }
        let w = { [segment] (field: Int) in segment.waiter(next, field) }
        let grantee = waiterIdentity(next)
        let token = _LockWord.grant(after: observed, to: grantee.pid)
        // Which entry this hand-off grants: a repair completes a hand-off cut
        // between the word and the grant (and only that one: cleared at the end).
        segment.store(f(_StoreLayout.L.handOff), UInt32(next + 1))
        guard cshm_cas_u64(word, observed, token | (others > 0 ? _LockWord.slow : 0)) else {
            segment.store(f(_StoreLayout.L.handOff), 0)
            return nil
        }
        // The holder record follows the word (until then "start unknown": alive
        // while the grantee's PID exists).
        writeHolder(slot, start: grantee.start, token: token)
        segment.store(f(_StoreLayout.L.flags), flags & ~_StoreLayout.lockFlagHolderDied)
        segment.store(w(_StoreLayout.W.flags), flags & _StoreLayout.lockFlagHolderDied)
        fault(.keyLockHandingOff)
        cshm_store_release_u64(segment.u64(w(_StoreLayout.W.grant)), token)
        segment.store(f(_StoreLayout.L.handOff), 0)
        ring(next)
        return next
    }

    /// Bumps and wakes the word a grant to entry `index` rings: its doorbell's
    /// (when it names a live doorbell of the same process) or its own.
    private func ring(_ index: Int) {
        var target = index
        let doorbell = Int(segment.load(segment.waiter(index, _StoreLayout.W.doorbell)))
        if doorbell > 0, doorbell <= layout.waiterSlots,
            segment.load(segment.waiter(doorbell - 1, _StoreLayout.W.slot)) == _StoreLayout.doorbellTag,
            waiterIdentity(doorbell - 1) == waiterIdentity(index)
        {
            target = doorbell - 1
        }
        let word = segment.u32(segment.waiter(target, _StoreLayout.W.word))
        _ = cshm_fetch_add_u32(word, 1)
        _ = cshm_futex_wake(word, 1)
    }

    // MARK: Doorbells (one per process's async waiting, see _AsyncLockWaiter)

    /// A doorbell entry for this process; nil when the waiter table is full.
    func addDoorbellLocked(me: _ProcessIdentity) -> Int? {
        guard let index = freeWaiter() else { return nil }
        let w = { [segment] (field: Int) in segment.waiter(index, field) }
        segment.store(w(_StoreLayout.W.pid), UInt32(bitPattern: me.pid))
        segment.store64(w(_StoreLayout.W.start), me.start)
        segment.store64(w(_StoreLayout.W.arrival), 0)
        segment.store(w(_StoreLayout.W.doorbell), 0)
        segment.store64(w(_StoreLayout.W.grant), 0)
        segment.store(w(_StoreLayout.W.flags), 0)
        segment.store(w(_StoreLayout.W.queued), 0)
        cshm_store_release_u32(segment.u32(w(_StoreLayout.W.slot)), _StoreLayout.doorbellTag)
        return index
    }

    func removeDoorbellLocked(_ index: Int, me: _ProcessIdentity) {
        guard index >= 0, index < layout.waiterSlots,
            segment.load(segment.waiter(index, _StoreLayout.W.slot)) == _StoreLayout.doorbellTag, waiterIdentity(index) == me
        else { return }
        clearWaiter(index)
    }

    /// The futex word of waiter entry (or doorbell) `index`.
    func word(_ index: Int) -> UnsafeMutablePointer<UInt32> { segment.u32(segment.waiter(index, _StoreLayout.W.word)) }

    /// Rings entry `index`'s own word (to wake this process's waiting thread).
    func ringOwn(_ index: Int) {
        guard index >= 0, index < layout.waiterSlots else { return }
        _ = cshm_fetch_add_u32(word(index), 1)
        _ = cshm_futex_wake(word(index), 1)
    }

    // MARK: Slots

    /// The slot bound to `identity`; with `bind`, binds a free one if there is
    /// none, unbinding idle slots first when every slot is bound (nil when every
    /// slot is bound to another key that is held, waited for or flagged).
    func findSlot(_ identity: Identity, bind: Bool) -> Int? {
        let count = layout.lockSlots
        var reusable: Int? = nil
        for pass in 0..<2 {
            var index = Int(identity.hash % UInt64(count))
            reusable = nil
            for _ in 0..<count {
                let state = segment.load(segment.slot(index, _StoreLayout.L.state))
                if state == _StoreLayout.slotEmpty {
                    if reusable == nil { reusable = index }
                    break
                }
                if state == _StoreLayout.slotBound {
                    let found = identity.key.withUnsafeBytes { matches(index, identity.kind, identity.hash, $0, racy: false) }
                    if found { return index }
                } else if reusable == nil {
                    reusable = index  // released, or garbage
                }
                index = index + 1 == count ? 0 : index + 1
            }
            guard bind else { return nil }
            if reusable != nil || pass == 1 { break }
            // Every slot is bound: unbind the idle ones (not this key's: not bound).
            for slot in 0..<count where segment.load(segment.slot(slot, _StoreLayout.L.state)) == _StoreLayout.slotBound {
                _ = unbindIfIdle(slot)
            }
        }
        guard let target = reusable else { return nil }
        bindSlot(target, identity)
        return target
    }

    /// Binds free slot `target` to `identity` (a seqlock write: the generation is
    /// odd meanwhile, and the word's counter moves on, so no CAS on a word read
    /// under the slot's previous binding succeeds).
    private func bindSlot(_ target: Int, _ identity: Identity) {
        let f = { [segment] (field: Int) in segment.slot(target, field) }
        let generation = generation(ofSlot: target)
        let odd = cshm_load_relaxed_u32(generation) | 1
        cshm_store_relaxed_u32(generation, odd)
        cshm_fence_release()
        fault(.keyLockBinding)
        segment.store(f(_StoreLayout.L.kind), identity.kind)
        segment.store64(f(_StoreLayout.L.keyHash), identity.hash)
        segment.store(f(_StoreLayout.L.keyLength), identity.length)
        identity.key.withUnsafeBytes { bytes in
            if let source = bytes.baseAddress, bytes.count > 0 {
                (segment.base + f(_StoreLayout.L.key)).copyMemory(from: source, byteCount: bytes.count)
            }
        }
        segment.store(f(_StoreLayout.L.flags), 0)
        segment.store(f(_StoreLayout.L.handOff), 0)
        segment.store64(f(_StoreLayout.L.start), 0)
        segment.store64(f(_StoreLayout.L.token), 0)
        segment.store64(f(_StoreLayout.L.arrival), 0)
        segment.store(f(_StoreLayout.L.state), _StoreLayout.slotBound)
        // The counter moves on by a random step (1 ... 2^29): a token of one key
        // is refused by another (but for a 2^-29 chance), and no word of the
        // slot's previous binding comes back.
        let word = word(ofSlot: target)
        let step = UInt64.random(in: 1...(1 << 29)) << 32
        cshm_store_release_u64(word, ((cshm_load_relaxed_u64(word) & _LockWord.counterMask) &+ step) & _LockWord.counterMask)
        cshm_store_release_u32(generation, odd &+ 1)
    }

    /// Whether bound slot `slot` is `identity`'s: kind, hash (nil: not compared,
    /// as by the hinted path, which computes none), length and every byte
    /// (`racy`: read outside the mutex, the caller's seqlock decides).
    @inline(__always) private func matches(_ slot: Int, _ kind: UInt32, _ hash: UInt64?, _ bytes: UnsafeRawBufferPointer, racy: Bool) -> Bool {
        let f = { [segment] (field: Int) in segment.slot(slot, field) }
        if let hash, segment.load64(f(_StoreLayout.L.keyHash)) != hash { return false }
        guard segment.load(f(_StoreLayout.L.kind)) == kind,
            segment.load(f(_StoreLayout.L.keyLength)) == UInt32(truncatingIfNeeded: bytes.count),
            bytes.count <= layout.lockKeyCapacity
        else { return false }
        guard bytes.count > 0, let mine = bytes.baseAddress else { return true }
        if racy { return cshm_racy_equal(segment.base + f(_StoreLayout.L.key), mine, bytes.count) != 0 }
        return memcmp(segment.base + f(_StoreLayout.L.key), mine, bytes.count) == 0
    }

    /// If `slot`'s holder died, hands the lock on. A holder that is a waiter
    /// granted the lock that died before claiming it never held it: the next
    /// taker is not told the holder died.
    private func releaseIfHolderDead(_ slot: Int, me: _ProcessIdentity) {
        guard let (holder, token) = holder(ofSlot: slot) else { return }
        if holder == me || (holder.pid == me.pid && holder.start == 0) { return }
        guard !holder.isAlive else { return }
        var claimed = true
        for index in 0..<layout.waiterSlots
        where segment.load(segment.waiter(index, _StoreLayout.W.slot)) == UInt32(slot + 1)
            && segment.load64(segment.waiter(index, _StoreLayout.W.grant)) == token
        {
            claimed = false  // granted, never claimed
            clearWaiter(index)
        }
        // The dead holder's word (the CAS fails if it changed since).
        let observed = cshm_load_acquire_u64(word(ofSlot: slot))
        guard observed & _LockWord.tokenMask == token else { return }
        _ = handOffLocked(slot, from: observed, holderDied: claimed)
    }

    /// Clears `slot`'s `slow` bit when nobody waits and no death is to be told
    /// (after the last waiter left): its next lock and unlock are one CAS again.
    private func clearSlowIfIdle(_ slot: Int) {
        guard segment.load(segment.slot(slot, _StoreLayout.L.flags)) & _StoreLayout.lockFlagHolderDied == 0, !hasEntries(slot)
        else { return }
        let word = word(ofSlot: slot)
        let observed = cshm_load_acquire_u64(word)
        if observed & _LockWord.slow != 0, observed & _LockWord.closed == 0 {
            _ = cshm_cas_u64(word, observed, observed & ~_LockWord.slow)
        }
    }

    /// Unbinds `slot` if nobody holds or waits for it, unless it is flagged "the
    /// holder died": that slot stays bound, so that its next taker is told. The
    /// word is closed by a CAS from free, so a concurrent fast lock either wins
    /// (the slot stays bound) or fails.
    @discardableResult
    private func unbindIfIdle(_ slot: Int) -> Bool {
        guard segment.load(segment.slot(slot, _StoreLayout.L.flags)) & _StoreLayout.lockFlagHolderDied == 0, !hasEntries(slot)
        else { return false }
        let word = word(ofSlot: slot)
        let observed = cshm_load_acquire_u64(word)
        guard _LockWord.pid(observed) == 0, observed & (_LockWord.slow | _LockWord.closed) == 0,
            cshm_cas_u64(word, observed, _LockWord.bumped(observed) | _LockWord.closed)
        else { return false }
        let generation = generation(ofSlot: slot)
        cshm_store_relaxed_u32(generation, cshm_load_relaxed_u32(generation) | 1)
        cshm_fence_release()
        unbind(slot)
        cshm_store_release_u32(generation, cshm_load_relaxed_u32(generation) &+ 1)
        return true
    }

    /// Releases a slot: a tombstone, or empty (with the tombstones before it) when
    /// the next slot is empty, so that probe runs stay short.
    private func unbind(_ slot: Int) {
        let count = layout.lockSlots
        let state = { [segment] (index: Int) in segment.slot(index, _StoreLayout.L.state) }
        segment.store(segment.slot(slot, _StoreLayout.L.flags), 0)
        segment.store(state(slot), _StoreLayout.slotReleased)
        var index = slot
        for _ in 0..<count {
            let next = index + 1 == count ? 0 : index + 1
            guard segment.load(state(index)) == _StoreLayout.slotReleased, segment.load(state(next)) == _StoreLayout.slotEmpty
            else { break }
            segment.store(state(index), _StoreLayout.slotEmpty)
            index = index == 0 ? count - 1 : index - 1
        }
    }

    // MARK: Waiters

    /// The earliest waiter of `slot` not yet granted the lock, if any.
    private func earliestWaiter(of slot: Int) -> Int? { waiters(of: slot).earliest }

    /// The earliest waiter of `slot` not yet granted the lock, and how many
    /// others wait. Liveness is not checked here (that costs a read of /proc
    /// under the table mutex on every hand-off): a lock granted to a waiter
    /// that died is passed on by the next waiter's liveness check, unflagged
    /// (it never held it).
    private func waiters(of slot: Int) -> (earliest: Int?, others: Int) {
        var earliest: (arrival: UInt64, index: Int)? = nil
        var count = 0
        for index in 0..<layout.waiterSlots {
            let tag = segment.load(segment.waiter(index, _StoreLayout.W.slot))
            if tag == 0 || tag == _StoreLayout.doorbellTag { continue }
            guard Int(tag) <= layout.lockSlots else {
                clearWaiter(index)  // garbage
                continue
            }
            if Int(tag) - 1 == slot, segment.load64(segment.waiter(index, _StoreLayout.W.grant)) == 0 {
                count += 1
                let arrival = segment.load64(segment.waiter(index, _StoreLayout.W.arrival))
                if let known = earliest, known.arrival <= arrival { continue }
                earliest = (arrival, index)
            }
        }
        return (earliest?.index, max(0, count - 1))
    }

    private func hasEntries(_ slot: Int) -> Bool {
        for index in 0..<layout.waiterSlots where segment.load(segment.waiter(index, _StoreLayout.W.slot)) == UInt32(slot + 1) {
            return true
        }
        return false
    }

    private func waiterIdentity(_ index: Int) -> _ProcessIdentity {
        _ProcessIdentity(
            pid: Int32(bitPattern: segment.load(segment.waiter(index, _StoreLayout.W.pid))),
            start: segment.load64(segment.waiter(index, _StoreLayout.W.start)))
    }

    private func freeWaiter() -> Int? {
        for index in 0..<layout.waiterSlots where segment.load(segment.waiter(index, _StoreLayout.W.slot)) == 0 {
            return index
        }
        // Reclaim entries of processes that died (their grants are handed on by
        // the dead-holder check).
        for index in 0..<layout.waiterSlots
        where segment.load64(segment.waiter(index, _StoreLayout.W.grant)) == 0 && !waiterIdentity(index).isAlive {
            clearWaiter(index)
            return index
        }
        return nil
    }

    private func clearWaiter(_ index: Int) {
        segment.store(segment.waiter(index, _StoreLayout.W.pid), 0)
        segment.store64(segment.waiter(index, _StoreLayout.W.start), 0)
        segment.store64(segment.waiter(index, _StoreLayout.W.arrival), 0)
        segment.store(segment.waiter(index, _StoreLayout.W.doorbell), 0)
        segment.store64(segment.waiter(index, _StoreLayout.W.grant), 0)
        segment.store(segment.waiter(index, _StoreLayout.W.flags), 0)
        segment.store(segment.waiter(index, _StoreLayout.W.queued), 0)
        cshm_store_release_u32(segment.u32(segment.waiter(index, _StoreLayout.W.slot)), 0)
    }

    // MARK: Repair and inspection

    /// After a process died holding the table mutex: clears dead waiters and
    /// doorbells and garbage entries; unbinds slots whose binding was cut short;
    /// completes a hand-off cut between the word and the grant; hands on locks
    /// of dead holders.
    func repairLocked() {
        for index in 0..<layout.waiterSlots {
            let tag = segment.load(segment.waiter(index, _StoreLayout.W.slot))
            if tag == 0 { continue }
            let garbage = tag != _StoreLayout.doorbellTag && Int(tag) > layout.lockSlots
            let dead = segment.load64(segment.waiter(index, _StoreLayout.W.grant)) == 0 && !waiterIdentity(index).isAlive
            if garbage || dead { clearWaiter(index) }
        }
        let me = _ProcessIdentity.current
        for slot in 0..<layout.lockSlots {
            let f = { [segment] (field: Int) in segment.slot(slot, field) }
            let word = word(ofSlot: slot)
            let generation = generation(ofSlot: slot)
            let state = segment.load(f(_StoreLayout.L.state))
            if cshm_load_relaxed_u32(generation) & 1 != 0 || state > _StoreLayout.slotReleased {
                // A bind or unbind cut short (or garbage): unbound, its word closed.
                cshm_store_release_u64(word, _LockWord.bumped(cshm_load_relaxed_u64(word)) | _LockWord.closed)
                unbind(slot)
                cshm_store_release_u32(generation, (cshm_load_relaxed_u32(generation) | 1) &+ 1)
                continue
            }
            guard state == _StoreLayout.slotBound else { continue }
            if segment.load(f(_StoreLayout.L.keyLength)) > UInt32(layout.lockKeyCapacity) {
                segment.store(f(_StoreLayout.L.keyLength), 0)  // never matches a real key's hash and bytes
            }
            let observed = cshm_load_acquire_u64(word)
            if observed & _LockWord.closed != 0 {
                _ = cshm_cas_u64(word, observed, _LockWord.bumped(observed) | _LockWord.slow)
            }
            let handOff = Int(segment.load(f(_StoreLayout.L.handOff)))
            if handOff > 0, handOff <= layout.waiterSlots, let (holder, token) = holder(ofSlot: slot) {
                let entry = handOff - 1
                let w = { [segment] (field: Int) in segment.waiter(entry, field) }
                if segment.load(w(_StoreLayout.W.slot)) == UInt32(slot + 1), segment.load64(w(_StoreLayout.W.grant)) == 0,
                    waiterIdentity(entry) == holder
                {
                    cshm_store_release_u64(segment.u64(w(_StoreLayout.W.grant)), token)
                    ring(entry)
                }
            }
            segment.store(f(_StoreLayout.L.handOff), 0)
            releaseIfHolderDead(slot, me: me)
        }
    }

    /// The live holder's PID (0 when free, or when the holder died) and the number
    /// of lock calls of live processes waiting for it. Changes nothing.
    func state(of identity: Identity, _ operation: @autoclosure () -> String) throws(ShmError) -> (holder: Int32, waiters: Int) {
        try locked(operation()) { () throws(ShmError) -> (holder: Int32, waiters: Int) in
            guard let slot = findSlot(identity, bind: false) else { return (0, 0) }
            var waiters = 0
            for index in 0..<layout.waiterSlots
            where segment.load(segment.waiter(index, _StoreLayout.W.slot)) == UInt32(slot + 1)
                && segment.load64(segment.waiter(index, _StoreLayout.W.grant)) == 0 && waiterIdentity(index).isAlive
            {
                waiters += max(1, Int(segment.load(segment.waiter(index, _StoreLayout.W.queued))))
            }
            guard let (holder, _) = holder(ofSlot: slot) else { return (0, waiters) }
            return (holder.isAlive ? holder.pid : 0, waiters)
        }
    }
}
