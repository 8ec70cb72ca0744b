import CShm
import Glibc
import Synchronization

/// Test-only fault injection: makes this process SIGKILL itself at a named point
/// inside a structural change, so tests can prove that a holder killed anywhere
/// leaves a cache the next locker repairs.
///
/// Compiled only into this package's own test builds (the `SHMLRU_TESTING`
/// condition, set by the package trait `FaultInjection`, which `make test`
/// enables, and by `make fuzz`): in any other build, an app's debug build
/// included, every kill point is an empty inline function and the environment
/// is never read.
/// In a test build it is armed by the environment variable `SHMLRU_FAULT_INJECTION`,
/// read once per process when the first cache handle is made:
///
///     SHMLRU_FAULT_INJECTION=<point>[,<point>…]@<n>[:stop]
///
/// kills the process the n-th time (n >= 1) it reaches any listed point (`*`
/// lists them all); with `:stop` it stops itself there instead (SIGSTOP, as a
/// debugger or the cgroup freezer would), holding whatever it holds. Unset (production), every handle holds `nil` and each point
/// costs one predictable branch on a field the handle already has in a register.
package final class _FaultInjection: Sendable {
    /// Where a process can be killed. Every point lies inside the segment's lock,
    /// but for the lock's own steps (`lock.*`, see `_SegmentLock`), the store's
    /// key locks (`keylock.*`, see `_LockTable`) and the index listing (`index.listing`).
    package enum Point: String, CaseIterable, Sendable {
        /// The cache's lock: just taken (owner word swapped in), nothing else done.
        case lockAcquired = "lock.acquired"
        /// The cache's lock: waiting for it, the waiters bit set, about to sleep.
        case lockWaiting = "lock.waiting"
        /// The cache's lock: taken over from a dead owner, the repair not begun.
        case lockTakenOver = "lock.takenOver"
        /// The cache's lock: released (word cleared), sleepers not yet woken.
        case lockReleasing = "lock.releasing"
        /// set: a slot was taken off the free list (or the high-water mark), nothing written.
        case setAllocated = "set.allocated"
        /// set (full cache): the LRU tail was evicted, its slot not yet rewritten.
        case setEvicted = "set.evicted"
        /// Inside a record's seqlock: sequence odd, hash and half the payload written.
        case recordTorn = "record.torn"
        /// set: the record is written, not linked or indexed.
        case setWritten = "set.written"
        /// set: the record is at the head of the LRU list, not counted or indexed.
        case setLinked = "set.linked"
        /// Removing an index entry: index sequence odd, entries not yet shifted.
        case indexShifting = "index.shifting"
        /// delete / eviction: the index entry is gone, the record still linked.
        case detachUnindexed = "detach.unindexed"
        /// Unlinking: the neighbour towards the head is relinked, the one towards the tail not.
        case listUnlinking = "list.unlinking"
        /// delete: the record is marked free and unlinked, not yet on the free list.
        case deleteFreed = "delete.freed"
        /// evict(lastUsedBefore:): one victim freed, the batch not finished.
        case evictBatch = "evict.batch"
        /// Eviction (CLOCK second chance, S3-FIFO): a record is unlinked from its queue, not yet relinked.
        case policyMoving = "policy.moving"
        /// SIEVE eviction: the hand cleared a visited bit and moved on, nothing evicted yet.
        case sieveHand = "sieve.hand"
        /// S3-FIFO eviction: a hash is written into the ghost, the victim not yet detached.
        case ghostInserted = "ghost.inserted"
        /// TinyLFU eviction: the window's candidate joined the main queue, the main queue's victim not yet detached.
        case admitted = "tinylfu.admitted"
        /// TinyLFU eviction: the window above its target moves its oldest record to the
        /// main queue without a duel; the record is unlinked from the window, not yet relinked.
        case windowShrinking = "tinylfu.shrinking"
        /// TinyLFU: half the sketch's words halved (ageing), the rest not.
        case sketchAging = "sketch.aging"
        /// TinyLFU's mini caches: a missed key's node is counted and mapped in a
        /// mini, not yet linked into its queue (the minis' busy word set).
        case miniUpdating = "tinylfu.miniUpdating"
        /// TinyLFU's mini caches: a drain of the use ring replayed its first entry,
        /// the rest not, the drained position not yet written.
        case miniDraining = "tinylfu.draining"
        /// A lock-free listing of the shared index (a store snapshot's first pass,
        /// `ShmLRU._listIndexedRecords`): half its positions read. Outside the lock.
        case indexListing = "index.listing"
        /// A process-local index rebuild (attach, reloadIndex) half done.
        case reloadPartial = "reload.partial"
        /// Repair: the index is cleared, the lists not yet rebuilt.
        case repairCleared = "repair.cleared"
        /// Repair: the LRU list is half relinked.
        case repairRelinking = "repair.relinking"
        /// Repair: the LRU list is rebuilt, the free list not.
        case repairFreeing = "repair.freeing"
        /// Store value heap: about half the chunks of a large value written, the record not.
        case heapChunks = "heap.chunks"
        /// Store value heap: every chunk of a large value written, the record not.
        case heapWritten = "heap.written"
        /// Store value heap: the new record is linked, the old value's chunks not yet freed.
        case heapLinked = "heap.linked"
        /// A store key lock, lock-free path: the word swapped to held, the holder
        /// record (start time) not yet written.
        case keyLockTaken = "keylock.taken"
        /// A store key lock, under the table mutex: the word's slow bit set for a
        /// new waiter, its waiter entry not yet written.
        case keyLockQueued = "keylock.queued"
        /// A store key lock hand-off, under the table mutex: the word names the
        /// next holder, its waiter entry's grant not yet written.
        case keyLockHandingOff = "keylock.handingOff"
        /// A store lock slot being bound to a key, under the table mutex: its
        /// generation odd, the key not yet written.
        case keyLockBinding = "keylock.binding"
    }

    package static let environmentVariable = "SHMLRU_FAULT_INJECTION"

    #if SHMLRU_TESTING

    /// The process's configuration, read once; nil when the variable is unset or malformed.
    package static let fromEnvironment: _FaultInjection? = {
        guard let raw = getenv(environmentVariable) else { return nil }
        return _FaultInjection(spec: String(cString: raw))
    }()

    let points: Set<Point>
    let killAt: Int
    let stops: Bool
    private let reached = Atomic<Int>(0)

    /// Parses `<point>[,<point>…]@<n>[:stop]`; nil if malformed.
    package init?(spec: String) {
        let parts = spec.split(separator: "@")
        guard parts.count == 2 else { return nil }
        let action = parts[1].split(separator: ":")
        guard (1...2).contains(action.count), let n = Int(action[0]), n >= 1 else { return nil }
        if action.count == 2 { guard action[1] == "stop" else { return nil } }
        stops = action.count == 2
        var points = Set<Point>()
        for name in parts[0].split(separator: ",") {
            if name == "*" {
                points.formUnion(Point.allCases)
            } else if let point = Point(rawValue: String(name)) {
                points.insert(point)
            } else {
                return nil
            }
        }
        guard !points.isEmpty else { return nil }
        self.points = points
        killAt = n
    }

    /// Called at `point`; kills the process when its turn has come.
    package func reach(_ point: Point) {
        guard points.contains(point) else { return }
        if reached.wrappingAdd(1, ordering: .relaxed).newValue == killAt {
            if stops {
                _ = kill(getpid(), SIGSTOP)  // resumes on SIGCONT, or dies by SIGKILL
                return
            }
            _ = kill(getpid(), SIGKILL)
            while true { pause() }  // SIGKILL is delivered before pause returns
        }
    }
    #endif
}

extension ShmLRU {
    /// A kill point for tests (see `_FaultInjection`): one branch when unarmed,
    /// nothing at all in a release build.
    @inline(__always)
    func _fault(_ point: _FaultInjection.Point) {
        #if SHMLRU_TESTING
        if let faults = _segment.faults { faults.reach(point) }
        #endif
    }
}
