import CShm
import Glibc

// The per-key lock table in the store segment (layout in _StoreLayout.swift).
//
// A lock slot is bound to a key (kind + UTF-8 bytes, compared in full) while the
// key's lock is held or waited for; probing is linear from hash % lockSlots, with
// released slots left as tombstones (trimmed when the next slot is empty).
//
// Waiting is a queue of waiter entries, each with an arrival number from the
// slot. A release hands the lock to the earliest live waiter: it writes the new
// holder and the entry's grant under the table mutex, then rings one futex word
// (the entry's own for a blocked thread, its process's doorbell for async
// waiters). Nobody else wakes, and a newcomer never barges past the line.
//
// The holder is a process (PID + start time, so a reused PID is not taken for
// the old holder). Waiters check every `livenessCheck` that the holder lives; a
// dead holder's lock goes to the next waiter, flagged (unless the "holder" was a
// waiter granted the lock that died before it claimed it: it never held it).
// Everything that changes the tables runs under the table's robust mutex, whose
// waits honour the caller's deadline; a process that died holding it is
// repaired after (dead waiters and holders cleared, idle slots unbound).

struct _LockTable: @unchecked Sendable {
    let segment: _StoreSegment
    let mutex: _RobustMutex
    /// The handle's lock timeout in ns (-1: none): the default deadline of a wait.
    let defaultTimeoutNanoseconds: Int64
    /// Where a key's probing starts (replaceable: tests force collisions).
    let hash: @Sendable ([UInt8]) -> UInt64

    /// How often a blocked waiter checks that the holder is alive.
    static let livenessCheckNanoseconds: UInt64 = 50_000_000
    /// How long `tryLock` may wait for the table's own mutex (a peer holds it for
    /// a table update only): short, so that a stopped or forged holder of that
    /// mutex cannot make a try block.
    static let tryTableWaitNanoseconds: UInt64 = 500_000
    /// How long a waiter that gives up (timeout, cancellation) may wait for the
    /// table mutex to leave the queue, past its own deadline.
    static let leaveTableWaitNanoseconds: UInt64 = 1_000_000_000

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

    // MARK: Blocking acquire and release

    /// Takes the lock, blocking the thread until `deadline` (monotonic ns; nil:
    /// for ever) unless `tryOnly`. Nil when `tryOnly` and the lock is busy.
    func acquire(
        _ identity: Identity, tryOnly: Bool, deadline: UInt64?, isCancelled: () -> Bool, _ operation: @autoclosure () -> String
    ) throws(ShmError) -> Grant? {
        let me = _ProcessIdentity.current
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
        while true {
            let observed = cshm_load_acquire_u32(word)
            if let grant = claim(index, me: me) { return grant }
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

    /// Releases the lock held with token `id` (handing it to the next waiter).
    /// Returns the waiter entry it was handed to, if any.
    @discardableResult
    func release(_ identity: Identity, id: UInt64, _ operation: @autoclosure () -> String) throws(ShmError) -> Int? {
        try locked(operation()) { () throws(ShmError) -> Int? in
            guard let slot = findSlot(identity, bind: false) else {
                throw ShmError(.lockNotHeld, operation(), detail: "the key is not locked")
            }
            let f = { (field: Int) in segment.slot(slot, field) }
            guard id != 0, segment.load(f(_StoreLayout.L.pid)) != 0, segment.load64(f(_StoreLayout.L.token)) == id else {
                throw ShmError(.lockNotHeld, operation(), detail: "the token does not hold the key's lock (wrong, or stale)")
            }
            return handOffLocked(slot, holderDied: false)
        }
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
        let f = { (field: Int) in segment.slot(slot, field) }
        // A try has nobody to notice a dead holder later; a waiter's own liveness
        // checks do (reading /proc here on every contended call would hold the
        // table mutex through three system calls).
        if tryOnly { releaseIfHolderDead(slot, me: me) }
        var holderFree = segment.load(f(_StoreLayout.L.pid)) == 0 && segment.load64(f(_StoreLayout.L.token)) == 0
        if holderFree, earliestWaiter(of: slot) != nil {
            // Free with a live waiter (a release hands the lock on, so only after
            // a repair): the waiter goes first.
            _ = handOffLocked(slot, holderDied: false)
            holderFree = false
        }
        if holderFree {
            let flags = segment.load(f(_StoreLayout.L.flags))
            let id = newToken()
            setHolder(slot, me, id)
            segment.store(f(_StoreLayout.L.flags), flags & ~_StoreLayout.lockFlagHolderDied)
            return .acquired(Grant(id: id, previousHolderDied: flags & _StoreLayout.lockFlagHolderDied != 0))
        }
        if tryOnly { return .busy }  // held: the slot stays bound
        guard let index = freeWaiter() else { return .noRoom }
        let arrival = segment.load64(f(_StoreLayout.L.arrival))
        segment.store64(f(_StoreLayout.L.arrival), arrival &+ 1)
        let w = { (field: Int) in segment.waiter(index, field) }
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

    /// The grant of waiter entry `index` if the lock was handed to it: clears the
    /// entry (it is ours; nobody else writes a granted entry) and returns the grant.
    /// Lock-free: the hand-off wrote the grant under the table mutex before ringing.
    func claim(_ index: Int, me: _ProcessIdentity) -> Grant? {
        guard index >= 0, index < layout.waiterSlots else { return nil }
        let w = { (field: Int) in segment.waiter(index, field) }
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
        if tag != 0, Int(tag) <= layout.lockSlots { unbindIfIdle(Int(tag) - 1) }
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
        releaseIfHolderDead(Int(tag) - 1, me: _ProcessIdentity.current)
    }

    /// Releases `slot`'s holder and hands the lock to the earliest live waiter
    /// (telling it whether the holder died), or unbinds the slot when nobody
    /// waits. Returns the entry it was handed to.
    private func handOffLocked(_ slot: Int, holderDied: Bool) -> Int? {
        let f = { (field: Int) in segment.slot(slot, field) }
        let flags = segment.load(f(_StoreLayout.L.flags)) | (holderDied ? _StoreLayout.lockFlagHolderDied : 0)
        guard let next = earliestWaiter(of: slot) else {
            clearHolder(slot)
            segment.store(f(_StoreLayout.L.flags), flags)
            unbindIfIdle(slot)
            return nil
        }
        let w = { (field: Int) in segment.waiter(next, field) }
        let id = newToken()
        setHolder(slot, waiterIdentity(next), id)
        segment.store(f(_StoreLayout.L.flags), flags & ~_StoreLayout.lockFlagHolderDied)
        segment.store(w(_StoreLayout.W.flags), flags & _StoreLayout.lockFlagHolderDied)
        cshm_store_release_u64(segment.u64(w(_StoreLayout.W.grant)), id)
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
        let w = { (field: Int) in segment.waiter(index, field) }
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
    /// none (nil when every slot is bound to another key).
    func findSlot(_ identity: Identity, bind: Bool) -> Int? {
        let count = layout.lockSlots
        var index = Int(identity.hash % UInt64(count))
        var reusable: Int? = nil
        for _ in 0..<count {
            let state = segment.load(segment.slot(index, _StoreLayout.L.state))
            if state == _StoreLayout.slotEmpty {
                if reusable == nil { reusable = index }
                break
            }
            if state == _StoreLayout.slotBound {
                if matches(index, identity) { return index }
            } else if reusable == nil {
                reusable = index  // released, or garbage
            }
            index = index + 1 == count ? 0 : index + 1
        }
        guard bind, let target = reusable else { return nil }
        let f = { (field: Int) in segment.slot(target, field) }
        segment.store(f(_StoreLayout.L.kind), identity.kind)
        segment.store64(f(_StoreLayout.L.keyHash), identity.hash)
        segment.store(f(_StoreLayout.L.keyLength), identity.length)
        identity.key.withUnsafeBytes { bytes in
            if let source = bytes.baseAddress, bytes.count > 0 {
                (segment.base + f(_StoreLayout.L.key)).copyMemory(from: source, byteCount: bytes.count)
            }
        }
        segment.store(f(_StoreLayout.L.flags), 0)
        clearHolder(target)
        segment.store64(f(_StoreLayout.L.arrival), 0)
        segment.store(f(_StoreLayout.L.state), _StoreLayout.slotBound)
        return target
    }

    /// Whether bound slot `slot` is `identity`'s: kind, hash, length and every byte.
    private func matches(_ slot: Int, _ identity: Identity) -> Bool {
        let f = { (field: Int) in segment.slot(slot, field) }
        guard segment.load(f(_StoreLayout.L.kind)) == identity.kind,
            segment.load64(f(_StoreLayout.L.keyHash)) == identity.hash,
            segment.load(f(_StoreLayout.L.keyLength)) == identity.length,
            identity.key.count <= layout.lockKeyCapacity
        else { return false }
        return identity.key.withUnsafeBytes { bytes in
            bytes.count == 0 || memcmp(segment.base + f(_StoreLayout.L.key), bytes.baseAddress!, bytes.count) == 0
        }
    }

    private func newToken() -> UInt64 { UInt64.random(in: 1...UInt64.max) }

    private func setHolder(_ slot: Int, _ holder: _ProcessIdentity, _ id: UInt64) {
        segment.store(segment.slot(slot, _StoreLayout.L.pid), UInt32(bitPattern: holder.pid))
        segment.store64(segment.slot(slot, _StoreLayout.L.start), holder.start)
        segment.store64(segment.slot(slot, _StoreLayout.L.token), id)
    }

    private func clearHolder(_ slot: Int) {
        segment.store(segment.slot(slot, _StoreLayout.L.pid), 0)
        segment.store64(segment.slot(slot, _StoreLayout.L.start), 0)
        segment.store64(segment.slot(slot, _StoreLayout.L.token), 0)
    }

    /// If `slot`'s holder died, hands the lock on. A holder that is a waiter
    /// granted the lock that died before claiming it never held it: the next
    /// taker is not told the holder died.
    private func releaseIfHolderDead(_ slot: Int, me: _ProcessIdentity) {
        let pid = Int32(bitPattern: segment.load(segment.slot(slot, _StoreLayout.L.pid)))
        let token = segment.load64(segment.slot(slot, _StoreLayout.L.token))
        if pid == 0 && token == 0 { return }
        let holder = _ProcessIdentity(pid: pid, start: segment.load64(segment.slot(slot, _StoreLayout.L.start)))
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
        _ = handOffLocked(slot, holderDied: claimed)
    }

    /// Unbinds `slot` if nobody holds or waits for it, unless it is flagged "the
    /// holder died": that slot stays bound, so that its next taker is told.
    private func unbindIfIdle(_ slot: Int) {
        guard segment.load(segment.slot(slot, _StoreLayout.L.flags)) & _StoreLayout.lockFlagHolderDied == 0,
            segment.load(segment.slot(slot, _StoreLayout.L.pid)) == 0,
            segment.load64(segment.slot(slot, _StoreLayout.L.token)) == 0,
            !hasEntries(slot)
        else { return }
        unbind(slot)
    }

    /// Releases a slot: a tombstone, or empty (with the tombstones before it) when
    /// the next slot is empty, so that probe runs stay short.
    private func unbind(_ slot: Int) {
        let count = layout.lockSlots
        let state = { (index: Int) in segment.slot(index, _StoreLayout.L.state) }
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

    /// The earliest waiter of `slot` not yet granted the lock. Its liveness is
    /// not checked here (that costs a read of /proc under the table mutex on
    /// every hand-off): a lock granted to a waiter that died is passed on by the
    /// next waiter's liveness check, unflagged (it never held it).
    private func earliestWaiter(of slot: Int) -> Int? {
        var entries: [(arrival: UInt64, index: Int)] = []
        for index in 0..<layout.waiterSlots {
            let tag = segment.load(segment.waiter(index, _StoreLayout.W.slot))
            if tag == 0 || tag == _StoreLayout.doorbellTag { continue }
            guard Int(tag) <= layout.lockSlots else {
                clearWaiter(index)  // garbage
                continue
            }
            if Int(tag) - 1 == slot, segment.load64(segment.waiter(index, _StoreLayout.W.grant)) == 0 {
                entries.append((segment.load64(segment.waiter(index, _StoreLayout.W.arrival)), index))
            }
        }
        return entries.min { $0.arrival < $1.arrival }?.index
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
    /// doorbells and garbage entries, hands on locks of dead holders, unbinds idle slots.
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
            let state = segment.load(segment.slot(slot, _StoreLayout.L.state))
            if state > _StoreLayout.slotReleased {
                segment.store(segment.slot(slot, _StoreLayout.L.state), _StoreLayout.slotReleased)
                continue
            }
            guard state == _StoreLayout.slotBound else { continue }
            if segment.load(segment.slot(slot, _StoreLayout.L.keyLength)) > UInt32(layout.lockKeyCapacity) {
                segment.store(segment.slot(slot, _StoreLayout.L.keyLength), 0)  // never matches a real key's hash and bytes
            }
            releaseIfHolderDead(slot, me: me)
            unbindIfIdle(slot)
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
            let holder = _ProcessIdentity(
                pid: Int32(bitPattern: segment.load(segment.slot(slot, _StoreLayout.L.pid))),
                start: segment.load64(segment.slot(slot, _StoreLayout.L.start)))
            return (holder.pid != 0 && holder.isAlive ? holder.pid : 0, waiters)
        }
    }
}
