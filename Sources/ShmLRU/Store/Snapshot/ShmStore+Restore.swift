import Glibc

// Filling a store from a snapshot (format: _SnapshotFormat.swift).
//
// Two passes over the file, so a large snapshot is never held whole:
// 1. every block is read and checked (CRC, lengths), and the entries that will
//    be restored are chosen in the file's order (the policy's preference, most
//    valuable first): not expired (the remaining life less the time since the
//    snapshot), a key and value this store takes, and while there is room
//    (records up to the capacity, value-heap chunks up to the heap's). The first
//    damage stops the pass: only the entries before it count.
// 2. the blocks holding chosen entries are read again, last first, and their
//    chosen entries written last first, so the most valuable entries are written
//    last: at the head of the LRU list, in S3-FIFO's main queue, and never evicted
//    by the restore itself. Each entry gets back its remaining life, its max age
//    and the uses its policy counted. Writes go under the data lock in batches of
//    64 entries: the store serves between them.

extension ShmStore {
    /// Fills the store from the snapshot at `path`: entries that expired since are
    /// left out, and when the store has less room than the snapshot (another
    /// capacity, record size or memory budget), the entries the snapshot's policy
    /// preferred are the ones restored. A key already in the store takes the
    /// snapshot's value. Listeners are told of every entry set.
    ///
    /// A file damaged after its header (truncated, a checksum that does not match)
    /// restores the entries before the damage, and the report names its offset.
    ///
    /// - Throws: `.notFound` (and the like) when the file cannot be opened;
    ///   `.snapshotVersionTooNew` for a newer format; `.snapshotDamaged` (the detail
    ///   names the offset) when its header is unusable: nothing is restored then;
    ///   `.lockTimeout` and what a set throws for the store itself.
    @discardableResult
    public func restore(from path: String) throws(ShmError) -> RestoreReport {
        let operation = "ShmStore.restore(from: \"\(path)\", key: \(key))"
        return try Self._withSnapshotFile(path, operation) { (source) throws(ShmError) -> RestoreReport in
            try _restore(from: source, path: path, operation)
        }
    }

    /// Opens the store under `key` as `open(key:configuration:permissions:persistent:)`
    /// does, and when the store it opens is empty (it created it, or replaced a
    /// stale one) and `path` exists, restores it from that snapshot.
    ///
    ///     let (store, restored) = try ShmStore.open(key: 0x5EED, configuration: config, restoringFrom: "/var/lib/app/cache.snap")
    ///     if let restored { log("restored \(restored.restored) entries, \(restored.skippedExpired) expired") }
    ///
    /// - Returns: the store, and the restore's report (nil when nothing was restored:
    ///   no file, or a store that already held entries).
    /// - Throws: what `open` throws; what `restore(from:)` throws (then this handle
    ///   is detached: open the store without restoring, or remove the file).
    public static func open(
        key: ShmKey, configuration: Configuration = Configuration(), permissions: UInt16 = 0o600, persistent: Bool = false,
        restoringFrom path: String
    ) throws(ShmError) -> (store: ShmStore, restored: RestoreReport?) {
        let store = try open(key: key, configuration: configuration, permissions: permissions, persistent: persistent)
        guard store.count == 0, access(path, F_OK) == 0 else { return (store, nil) }
        do {
            return (store, try store.restore(from: path))
        } catch {
            try? store.detach()
            throw error
        }
    }

    /// The restore itself, from any source (a file, or bytes for the fuzz harness).
    func _restore(from source: _SnapshotSource, path: String, _ operation: String) throws(ShmError) -> RestoreReport {
        let started = _monotonicNanoseconds()
        guard cache._lockFreeView.isAttached else { throw ShmError(.detached, operation) }
        let reader = try _SnapshotReader(source, operation)
        var report = RestoreReport(
            path: path, entriesInSnapshot: 0, restored: 0, skippedExpired: 0, skippedNoRoom: 0, damage: nil, duration: .zero)
        func elapsed() -> UInt64 {
            let now = _realtimeNanoseconds()
            return now > reader.header.writtenAt ? now - reader.header.writtenAt : 0
        }

        // Pass 1: choose.
        let capacity = configuration.capacity
        let heapChunks = _heap == nil ? 0 : _store.layout.heapChunks
        var records = 0
        var chunks = 0
        var chosen: [[Int]] = []
        let since = elapsed()
        let (fault, blocks) = reader.walk { block in
            var picks: [Int] = []
            for (index, entry) in block.entries.enumerated() {
                report.entriesInSnapshot += 1
                if entry.remaining != 0, entry.remaining <= since {
                    report.skippedExpired += 1
                    continue
                }
                let needs = _chunksNeeded(entry)
                guard records < capacity, let needs, needs == 0 || chunks + needs <= heapChunks else {
                    report.skippedNoRoom += 1
                    continue
                }
                records += 1
                chunks += needs
                picks.append(index)
            }
            chosen.append(picks)
            return true
        }
        if let fault { report.damage = SnapshotDamage(offset: fault.offset, reason: fault.reason, entriesBefore: report.entriesInSnapshot) }

        // Pass 2: write, least preferred first.
        for blockNumber in blocks.indices.reversed() where !chosen[blockNumber].isEmpty {
            var ignored = _crc32cStart
            let block: _SnapshotReader.Block
            do {
                block = try reader.block(at: blocks[blockNumber].offset, index: UInt32(blockNumber), running: &ignored)
            } catch {
                // The file changed under the restore: what was written stays; the rest is reported.
                report.damage = SnapshotDamage(offset: error.offset, reason: error.reason + " (changed during the restore)", entriesBefore: report.entriesInSnapshot)
                report.skippedNoRoom += chosen[0...blockNumber].reduce(0) { $0 + $1.count }
                break
            }
            let picks = chosen[blockNumber].reversed().map { block.entries[$0] }
            var start = 0
            while start < picks.count {
                let batch = picks[start..<min(start + 64, picks.count)]
                let outcome = try _restoreBatch(batch, elapsed: elapsed(), operation)
                report.restored += outcome.restored
                report.skippedExpired += outcome.expired
                report.skippedNoRoom += outcome.noRoom
                start += batch.count
            }
        }
        report.duration = .nanoseconds(Int64(clamping: _monotonicNanoseconds() &- started))
        return report
    }

    /// The value-heap chunks `entry` takes here (0: inline); nil when this store cannot take it.
    func _chunksNeeded(_ entry: _SnapshotEntry) -> Int? {
        guard (try? _checkFits(entry.key.count, entry.value.count, "")) != nil else { return nil }
        guard _heap != nil, _StoreLayout.payloadHeaderSize + entry.key.count + entry.value.count > cache.recordSize else { return 0 }
        return _ValueHeap.chunks(for: entry.value.count)
    }

    /// Writes up to 64 entries under one hold of the data lock, in the order given.
    func _restoreBatch(_ batch: ArraySlice<_SnapshotEntry>, elapsed: UInt64, _ operation: String) throws(ShmError)
        -> (restored: Int, expired: Int, noRoom: Int)
    {
        try cache._withLockedHandle(operation) { (lru) throws(ShmError) -> (restored: Int, expired: Int, noRoom: Int) in
            var outcome = (restored: 0, expired: 0, noRoom: 0)  // counted afresh if the lock's caller runs this again
            for entry in batch {
                if entry.remaining != 0, entry.remaining <= elapsed {
                    outcome.expired += 1
                    continue
                }
                let now = _monotonicNanoseconds()
                let expiresAt = entry.remaining == 0 ? 0 : _saturatingAdd(now, entry.remaining - elapsed)
                let base = _hash(String(decoding: entry.key, as: UTF8.self))  // the reader checked it is UTF-8
                do throws(ShmError) {
                    try _withBytes(entry.key) { (key) throws(ShmError) in
                        try _withBytes(entry.value) { (value) throws(ShmError) in
                            let (found, free) = try _locateLocked(lru, key, base: base, now: now, reclaim: true)
                            try _writeLocked(
                                lru, key, value: value, found: found, free: free, base: base, now: now, expiresAt: expiresAt,
                                maxAge: entry.maxAge, operation)
                            if entry.uses > 0, let written = try _locateLocked(lru, key, base: base, now: now, reclaim: false).found {
                                lru.restoreUses(written.slot, entry.uses)
                            }
                        }
                    }
                    outcome.restored += 1
                } catch where error.code == .keyCollision || error.code == .valueTooLarge || error.code == .full {
                    outcome.noRoom += 1
                }
            }
            return outcome
        }
    }
}
