import CShm
import Glibc

// The per-key lock table in the store segment (layout in _StoreLayout.swift).
//
// A lock slot is bound to a key (64-bit FNV-1a + UTF-8 length) while the key's
// lock is held or waited for; probing is linear from hash % lockSlots, with
// released slots left as tombstones (trimmed when the next slot is empty). A
// blocked call registers a waiter entry carrying its process identity and an
// arrival number from the slot; a free lock goes to the earliest live waiter,
// so waiters are served in arrival order and a newcomer never barges past them.
//
// The holder is a process (PID + start time, so a reused PID is not taken for
// the old holder). Waiters sleep on the slot's futex word, which every release
// bumps, and wake at least every `livenessCheck` to see whether the holder (or
// the waiter ahead of them) died; a dead holder's lock is cleared and flagged,
// and its next taker is told. Everything here runs under the table's robust
// mutex; a process that died holding it is repaired after (dead waiters and
// holders cleared, idle slots unbound, every waiter woken).

struct _LockTable: @unchecked Sendable {
    let segment: _StoreSegment
    let mutex: _RobustMutex

    /// How often a blocked waiter checks that the holder is alive.
    static let livenessCheckNanoseconds: Int64 = 50_000_000
    /// How long to wait for the table's own mutex (held only for table updates).
    static let tableLockTimeoutNanoseconds: Int64 = 10_000_000_000

    struct Identity {
        var hash: UInt64
        var length: UInt32
        init(_ key: String) {
            hash = _fnv1a64(key.utf8)
            length = UInt32(truncatingIfNeeded: key.utf8.count)
        }
    }

    enum Step {
        case acquired(id: UInt64, previousHolderDied: Bool)
        case busy
        case wait(slot: Int, observed: UInt32)
        case timedOut
        case cancelled
    }

    private var layout: _StoreLayout { segment.layout }

    // MARK: Table lock

    func locked<R>(_ operation: @autoclosure () -> String, _ body: () throws(ShmError) -> R) throws(ShmError) -> R {
        let acquired: _RobustMutex.Acquired
        do { acquired = try mutex.lock(timeoutNanoseconds: _LockTable.tableLockTimeoutNanoseconds) } catch {
            throw ShmError(error.code, operation(), errno: error.errno, detail: "lock table: " + (error.detail ?? ""))
        }
        defer { mutex.unlock() }
        if acquired == .previousOwnerDied {
            repairLocked()
            mutex.markConsistent()
        }
        return try body()
    }

    // MARK: Acquire and release

    /// Takes the lock, waiting until `deadline` (monotonic ns; nil: for ever) unless
    /// `tryOnly`. Nil when `tryOnly` and the lock is busy.
    func acquire(
        _ identity: Identity, tryOnly: Bool, deadline: UInt64?, isCancelled: () -> Bool, _ operation: @autoclosure () -> String
    ) throws(ShmError) -> (id: UInt64, previousHolderDied: Bool)? {
        let me = _ProcessIdentity.current
        var waiter: Int? = nil
        do throws(ShmError) {
            while true {
                let now = _monotonicNanoseconds()
                let passed = deadline.map { now >= $0 } ?? false
                let step = try locked(operation()) { () throws(ShmError) -> Step in
                    try attemptLocked(identity, me: me, waiter: &waiter, tryOnly: tryOnly, deadlinePassed: passed, cancelled: isCancelled(), operation())
                }
                switch step {
                case .acquired(let id, let died): return (id, died)
                case .busy: return nil
                case .timedOut:
                    throw ShmError(.lockTimeout, operation(), detail: "the key's lock was not free in time")
                case .cancelled:
                    throw ShmError(.cancelled, operation(), detail: "the waiting task was cancelled")
                case .wait(let slot, let observed):
                    var wait = _LockTable.livenessCheckNanoseconds
                    if let deadline { wait = min(wait, Int64(clamping: deadline &- min(deadline, now)) + 1_000_000) }
                    _ = cshm_futex_wait(segment.u32(segment.slot(slot, _StoreLayout.L.wake)), observed, wait)
                }
            }
        } catch {
            if let index = waiter {
                _ = try? locked(operation()) { () throws(ShmError) in clearWaiterIfMine(index, me) }
            }
            throw error
        }
    }

    /// Releases the lock held with token `id`.
    func release(_ identity: Identity, id: UInt64, _ operation: @autoclosure () -> String) throws(ShmError) {
        try locked(operation()) { () throws(ShmError) in
            guard let slot = try findSlot(identity, bind: false, operation()) else {
                throw ShmError(.lockNotHeld, operation(), detail: "the key is not locked")
            }
            let f = { (field: Int) in segment.slot(slot, field) }
            guard id != 0, segment.load(f(_StoreLayout.L.pid)) != 0, segment.load64(f(_StoreLayout.L.token)) == id else {
                throw ShmError(.lockNotHeld, operation(), detail: "the token does not hold the key's lock (wrong, or stale)")
            }
            clearHolder(slot)
            if queue(of: slot, me: nil).count > 0 { wakeAll(slot) } else { unbind(slot) }
        }
    }

    /// One decision under the table mutex.
    private func attemptLocked(
        _ identity: Identity, me: _ProcessIdentity, waiter: inout Int?, tryOnly: Bool, deadlinePassed: Bool, cancelled: Bool,
        _ operation: @autoclosure () -> String
    ) throws(ShmError) -> Step {
        guard let slot = try findSlot(identity, bind: true, operation()) else { throw ShmError(.full, operation()) }
        let f = { (field: Int) in segment.slot(slot, field) }
        releaseIfHolderDead(slot, me: me)
        if let index = waiter, segment.load(segment.waiter(index, _StoreLayout.W.slot)) != UInt32(slot + 1) {
            waiter = nil  // cleared by a repair that misjudged us: queue again
        }
        let holderFree = segment.load(f(_StoreLayout.L.pid)) == 0 && segment.load64(f(_StoreLayout.L.token)) == 0
        let line = queue(of: slot, me: me)
        if holderFree, line.earliest == nil || line.earliest == waiter {
            let id = UInt64.random(in: 1...UInt64.max)
            let flags = segment.load(f(_StoreLayout.L.flags))
            segment.store(f(_StoreLayout.L.pid), UInt32(bitPattern: me.pid))
            segment.store64(f(_StoreLayout.L.start), me.start)
            segment.store64(f(_StoreLayout.L.token), id)
            segment.store(f(_StoreLayout.L.flags), flags & ~_StoreLayout.lockFlagHolderDied)
            if let index = waiter { clearWaiter(index) }
            waiter = nil
            return .acquired(id: id, previousHolderDied: flags & _StoreLayout.lockFlagHolderDied != 0)
        }
        if tryOnly { return .busy }  // held or waited for: the slot stays bound
        if deadlinePassed || cancelled {
            if let index = waiter { clearWaiter(index) }
            waiter = nil
            if holderFree { wakeAll(slot) }  // we may have been first in line
            unbindIfIdle(slot)
            return cancelled ? .cancelled : .timedOut
        }
        if waiter == nil {
            guard let index = freeWaiter() else {
                unbindIfIdle(slot)
                throw ShmError(.full, operation(), detail: "all \(layout.waiterSlots) lock waiter entries are in use")
            }
            let arrival = segment.load64(f(_StoreLayout.L.arrival))
            segment.store64(f(_StoreLayout.L.arrival), arrival &+ 1)
            segment.store(segment.waiter(index, _StoreLayout.W.pid), UInt32(bitPattern: me.pid))
            segment.store64(segment.waiter(index, _StoreLayout.W.start), me.start)
            segment.store64(segment.waiter(index, _StoreLayout.W.arrival), arrival)
            segment.store(segment.waiter(index, _StoreLayout.W.slot), UInt32(slot + 1))
            waiter = index
        }
        return .wait(slot: slot, observed: cshm_load_acquire_u32(segment.u32(f(_StoreLayout.L.wake))))
    }

    // MARK: Slots

    /// The slot bound to `identity`; with `bind`, binds a free one if there is none.
    func findSlot(_ identity: Identity, bind: Bool, _ operation: @autoclosure () -> String) throws(ShmError) -> Int? {
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
                if segment.load64(segment.slot(index, _StoreLayout.L.keyHash)) == identity.hash,
                    segment.load(segment.slot(index, _StoreLayout.L.keyLength)) == identity.length
                {
                    return index
                }
            } else if reusable == nil {
                reusable = index  // released, or garbage
            }
            index = index + 1 == count ? 0 : index + 1
        }
        guard bind else { return nil }
        guard let target = reusable else {
            throw ShmError(.full, operation(), detail: "all \(count) lock slots are bound to keys")
        }
        let f = { (field: Int) in segment.slot(target, field) }
        segment.store64(f(_StoreLayout.L.keyHash), identity.hash)
        segment.store(f(_StoreLayout.L.keyLength), identity.length)
        segment.store(f(_StoreLayout.L.flags), 0)
        segment.store(f(_StoreLayout.L.pid), 0)
        segment.store64(f(_StoreLayout.L.start), 0)
        segment.store64(f(_StoreLayout.L.token), 0)
        segment.store64(f(_StoreLayout.L.arrival), 0)
        segment.store(f(_StoreLayout.L.state), _StoreLayout.slotBound)
        return target
    }

    private func clearHolder(_ slot: Int) {
        segment.store(segment.slot(slot, _StoreLayout.L.pid), 0)
        segment.store64(segment.slot(slot, _StoreLayout.L.start), 0)
        segment.store64(segment.slot(slot, _StoreLayout.L.token), 0)
    }

    /// If the holder died, clears it and flags the slot (the next taker is told).
    private func releaseIfHolderDead(_ slot: Int, me: _ProcessIdentity) {
        let pid = Int32(bitPattern: segment.load(segment.slot(slot, _StoreLayout.L.pid)))
        let token = segment.load64(segment.slot(slot, _StoreLayout.L.token))
        if pid == 0 && token == 0 { return }
        let holder = _ProcessIdentity(pid: pid, start: segment.load64(segment.slot(slot, _StoreLayout.L.start)))
        if holder == me || (holder.pid == me.pid && holder.start == 0) { return }
        guard !holder.isAlive else { return }
        clearHolder(slot)
        let flags = segment.slot(slot, _StoreLayout.L.flags)
        segment.store(flags, segment.load(flags) | _StoreLayout.lockFlagHolderDied)
        wakeAll(slot)
    }

    private func wakeAll(_ slot: Int) {
        let word = segment.u32(segment.slot(slot, _StoreLayout.L.wake))
        _ = cshm_fetch_add_u32(word, 1)
        _ = cshm_futex_wake(word, Int32.max)
    }

    private func unbindIfIdle(_ slot: Int) {
        guard segment.load(segment.slot(slot, _StoreLayout.L.pid)) == 0,
            segment.load64(segment.slot(slot, _StoreLayout.L.token)) == 0,
            queue(of: slot, me: nil).count == 0
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

    /// The waiter entries of `slot`: how many, and the earliest live one (dead ones
    /// met while looking for it are cleared). `me` is never checked for liveness.
    private func queue(of slot: Int, me: _ProcessIdentity?) -> (count: Int, earliest: Int?) {
        var entries: [(arrival: UInt64, index: Int)] = []
        for index in 0..<layout.waiterSlots {
            let tag = segment.load(segment.waiter(index, _StoreLayout.W.slot))
            if tag == 0 { continue }
            guard Int(tag) <= layout.lockSlots else {
                clearWaiter(index)  // garbage
                continue
            }
            if Int(tag) - 1 == slot { entries.append((segment.load64(segment.waiter(index, _StoreLayout.W.arrival)), index)) }
        }
        entries.sort { $0.arrival < $1.arrival }
        var count = entries.count
        for entry in entries {
            let identity = waiterIdentity(entry.index)
            if identity == me || identity.isAlive { return (count, entry.index) }
            clearWaiter(entry.index)
            count -= 1
        }
        return (count, nil)
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
        // Reclaim entries of processes that died.
        for index in 0..<layout.waiterSlots where !waiterIdentity(index).isAlive {
            clearWaiter(index)
            return index
        }
        return nil
    }

    private func clearWaiter(_ index: Int) {
        segment.store(segment.waiter(index, _StoreLayout.W.slot), 0)
        segment.store(segment.waiter(index, _StoreLayout.W.pid), 0)
        segment.store64(segment.waiter(index, _StoreLayout.W.start), 0)
        segment.store64(segment.waiter(index, _StoreLayout.W.arrival), 0)
    }

    private func clearWaiterIfMine(_ index: Int, _ me: _ProcessIdentity) {
        guard index < layout.waiterSlots, waiterIdentity(index) == me else { return }
        let tag = segment.load(segment.waiter(index, _StoreLayout.W.slot))
        clearWaiter(index)
        if tag != 0, Int(tag) <= layout.lockSlots {
            let slot = Int(tag) - 1
            if segment.load(segment.slot(slot, _StoreLayout.L.pid)) == 0 { wakeAll(slot) }
            unbindIfIdle(slot)
        }
    }

    // MARK: Repair and inspection

    /// After a process died holding the table mutex: clears dead waiters and
    /// holders, unbinds idle slots, wakes every waiter.
    func repairLocked() {
        for index in 0..<layout.waiterSlots where segment.load(segment.waiter(index, _StoreLayout.W.slot)) != 0 {
            let tag = segment.load(segment.waiter(index, _StoreLayout.W.slot))
            if Int(tag) > layout.lockSlots || !waiterIdentity(index).isAlive { clearWaiter(index) }
        }
        let me = _ProcessIdentity.current
        for slot in 0..<layout.lockSlots {
            let state = segment.load(segment.slot(slot, _StoreLayout.L.state))
            if state > _StoreLayout.slotReleased {
                segment.store(segment.slot(slot, _StoreLayout.L.state), _StoreLayout.slotReleased)
                continue
            }
            guard state == _StoreLayout.slotBound else { continue }
            releaseIfHolderDead(slot, me: me)
            wakeAll(slot)
            unbindIfIdle(slot)
        }
    }

    /// The live holder's PID (0 when free, or when the holder died) and the number
    /// of waiters of a key's lock. Changes nothing.
    func state(of identity: Identity, _ operation: @autoclosure () -> String) throws(ShmError) -> (holder: Int32, waiters: Int) {
        try locked(operation()) { () throws(ShmError) -> (holder: Int32, waiters: Int) in
            guard let slot = try findSlot(identity, bind: false, operation()) else { return (0, 0) }
            var waiters = 0
            for index in 0..<layout.waiterSlots where segment.load(segment.waiter(index, _StoreLayout.W.slot)) == UInt32(slot + 1) {
                waiters += 1
            }
            let holder = _ProcessIdentity(
                pid: Int32(bitPattern: segment.load(segment.slot(slot, _StoreLayout.L.pid))),
                start: segment.load64(segment.slot(slot, _StoreLayout.L.start)))
            return (holder.pid != 0 && holder.isAlive ? holder.pid : 0, waiters)
        }
    }
}
