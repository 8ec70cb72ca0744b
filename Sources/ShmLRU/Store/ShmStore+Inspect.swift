import CShm

// Inspection of a store without trusting it: `probe(key:)` reads the store
// segment's header read-only, `lockStates()` reads the lock table without its
// lock. Both change nothing; the command-line tool's `list` and `store locks`
// are built on them.

extension ShmStore {
    /// What a store segment's header says, read by `probe(key:)`.
    public struct SegmentSummary: Sendable, Hashable {
        /// The store segment's key.
        public var key: ShmKey
        /// The store segment's kernel id (`shmid`).
        public var id: Int32
        /// The store segment's size in bytes.
        public var byteCount: Int
        /// Attachments to the store segment by every process, not counting the probe's own.
        public var attachCount: Int
        /// The key of the ShmLRU segment holding the values.
        public var dataKey: ShmKey
        /// Bytes per record of the data segment.
        public var recordSize: Int
        /// Lock slots, waiter entries and change-log entries of the store segment.
        public var lockSlots: Int
        /// Waiter entries of the store segment.
        public var lockWaiters: Int
        /// Change-log entries of the store segment.
        public var changeLogCapacity: Int
        /// The default max age of an entry; nil: entries do not expire.
        public var maxAge: Duration?
    }

    /// Reads the header of the store segment with `key` without trusting it:
    /// attaches read-only for the length of the call, takes no lock, writes
    /// nothing, and checks every field as `attach` does. Safe on any segment.
    ///
    /// - Throws: `.notFound`, `.permissionDenied`, `.incompatibleSegment` (not a
    ///   store of this layout version), `.corrupted` (a store magic with a header
    ///   that does not add up).
    public static func probe(key: ShmKey) throws(ShmError) -> SegmentSummary {
        let operation = "ShmStore.probe(key: \(key))"
        let region: ShmRegion
        do { region = try ShmRegion.attach(key: key, readOnly: true) } catch {
            throw ShmError(error.code, operation, errno: error.errno, detail: error.detail)
        }
        defer { _ = try? region.detach() }
        let header: (_StoreLayout, Configuration, ShmKey)
        do { header = try _validateHeader(of: region, wait: .zero, readOnlyAllowed: true) } catch {
            throw ShmError(error.code, operation, errno: error.errno, detail: error.detail)
        }
        let (layout, configuration, dataKey) = header
        let attachments = (try? region.attachCount).map { max(0, $0 - 1) } ?? 0
        return SegmentSummary(
            key: key, id: region.id, byteCount: region.byteCount, attachCount: attachments, dataKey: dataKey,
            recordSize: layout.recordSize, lockSlots: layout.lockSlots, lockWaiters: layout.waiterSlots,
            changeLogCapacity: layout.logCapacity, maxAge: configuration.maxAge)
    }

    /// One per-key lock that is held or waited for.
    public struct LockState: Sendable, Hashable {
        /// The key, when a stored key has the lock's identity (the lock table keeps
        /// only a 64-bit hash and the length of a key, not the key).
        public var key: String?
        /// FNV-1a 64 of the key's UTF-8 bytes, and their count: the lock's identity.
        public var keyHash: UInt64
        /// The key's length in UTF-8 bytes.
        public var keyLength: Int
        /// The holder's process id; nil when free (or the holder died and nobody took it yet).
        public var holder: Int32?
        /// Lock calls waiting for it.
        public var waiters: Int
    }

    /// The locks held or waited for now, read without the lock table's lock (a
    /// snapshot, which a concurrent lock or unlock may make stale at once), in
    /// table order. Every slot number read is checked; nothing is written.
    public func lockStates() throws(ShmError) -> [LockState] {
        guard _storeRegion.isAttached else { throw ShmError(.detached, "ShmStore.lockStates(key: \(key))") }
        let s = _store
        let layout = s.layout
        var waiters = [Int](repeating: 0, count: layout.lockSlots)
        for index in 0..<layout.waiterSlots {
            let tag = Int(s.load(s.waiter(index, _StoreLayout.W.slot)))
            guard tag > 0, tag <= layout.lockSlots else { continue }
            if _ProcessIdentity(
                pid: Int32(bitPattern: s.load(s.waiter(index, _StoreLayout.W.pid))),
                start: s.load64(s.waiter(index, _StoreLayout.W.start))
            ).isAlive {
                waiters[tag - 1] += 1
            }
        }
        var result: [LockState] = []
        for slot in 0..<layout.lockSlots where s.load(s.slot(slot, _StoreLayout.L.state)) == _StoreLayout.slotBound {
            let holder = _locks.holder(ofSlot: slot)?.identity ?? _ProcessIdentity(pid: 0, start: 0)
            let held = holder.pid != 0 && holder.isAlive
            guard held || waiters[slot] > 0 else { continue }
            result.append(
                LockState(
                    key: nil, keyHash: s.load64(s.slot(slot, _StoreLayout.L.keyHash)),
                    keyLength: Int(s.load(s.slot(slot, _StoreLayout.L.keyLength))), holder: held ? holder.pid : nil,
                    waiters: waiters[slot]))
        }
        guard !result.isEmpty else { return result }
        var names: [UInt64: [String]] = [:]
        for stored in try keys() { names[_fnv1a64(stored.utf8), default: []].append(stored) }
        for i in result.indices {
            result[i].key = names[result[i].keyHash]?.first { $0.utf8.count == result[i].keyLength }
        }
        return result
    }
}
