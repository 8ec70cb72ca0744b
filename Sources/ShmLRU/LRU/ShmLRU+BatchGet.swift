import CShm

// Batched reads: many keys per call, so that their cache misses overlap. A get
// of one key at 1M records waits for two dependent misses (its index entry, then
// its record), one after the other; a batch works on a window of keys in three
// passes: ask for every key's index entry, then for every record those entries
// name, then read each key, whose lines are by then on their way or in the cache.
// The prefetches are hints read racily (a prefetch never faults, and its address
// is range-checked like a real lookup's); each read is the ordinary one: lock-free
// with interval promotion, or under the lock (taken once per window) with exact
// LRU, which then promotes the hits in the batch's order, as single gets would.

extension ShmLRU {
    /// Keys read per window: enough misses in flight to cover the memory latency,
    /// few enough that the window's lines stay in L1/L2 until they are read.
    static let _batchWindow = 16

    /// Gets the values of many keys at once: the value of `hashes[i]` is copied to
    /// `buffer` at byte `i * stride`, and its length stored in `lengths[i]` (-1 for
    /// a miss). Returns the number of hits. With exact LRU the hits are promoted in
    /// order (the last key ends up the most recently used), under one lock per
    /// window of keys.
    ///
    /// - Throws: `.invalidArgument` if `lengths` is shorter than `hashes`, `buffer`
    ///   shorter than `hashes.count * stride`, or a value longer than `stride`
    ///   (the keys before it are read, the rest are not); `.detached`; `.lockTimeout`.
    @discardableResult
    public func get(
        _ hashes: UnsafeBufferPointer<UInt32>, into buffer: UnsafeMutableRawBufferPointer, stride: Int,
        lengths: UnsafeMutableBufferPointer<Int>
    ) throws(ShmError) -> Int {
        let operation = "get(\(hashes.count) keys, into:stride:lengths:)"
        let (needed, overflow) = hashes.count.multipliedReportingOverflow(by: max(stride, 0))
        guard stride >= 0, lengths.count >= hashes.count, !overflow, buffer.count >= needed else {
            throw ShmError(
                .invalidArgument, operation,
                detail: "\(hashes.count) keys need \(hashes.count) lengths and \(hashes.count) x \(stride) bytes; "
                    + "got \(lengths.count) and \(buffer.count)")
        }
        try _checkAttached(operation)
        guard let keys = hashes.baseAddress, hashes.count > 0 else { return 0 }
        let base = buffer.baseAddress!
        var hits = 0
        var start = 0
        while start < hashes.count {
            let end = min(start &+ ShmLRU._batchWindow, hashes.count)
            _prefetchBatch(keys + start, count: end &- start)
            if _promotionNanoseconds != 0 {
                for i in start..<end {
                    let target = UnsafeMutableRawBufferPointer(start: base + i &* stride, count: stride)
                    if let length = try get(keys[i], into: target) {
                        lengths[i] = length
                        hits &+= 1
                    } else {
                        lengths[i] = -1
                    }
                }
            } else {
                hits &+= try _getWindowLocked(keys, start..<end, base: base, stride: stride, lengths: lengths, operation)
            }
            start = end
        }
        return hits
    }

    /// Gets the values of many keys and lends each hit to `body` (index into
    /// `hashes`, value), in order, outside the lock; misses are skipped. Returns
    /// the number of hits. The value is a copy (valid only inside `body`).
    @discardableResult
    public func get(_ hashes: [UInt32], _ body: (Int, UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        let window = ShmLRU._batchWindow
        let size = recordSize
        var hits = 0
        try withUnsafeTemporaryAllocation(byteCount: window * size, alignment: 16) { scratch in
            try withUnsafeTemporaryAllocation(of: Int.self, capacity: window) { lengths in
                try hashes.withUnsafeBufferPointer { keys in
                    var start = 0
                    while start < keys.count {
                        let end = min(start + window, keys.count)
                        let part = UnsafeBufferPointer(rebasing: keys[start..<end])
                        hits += try get(part, into: scratch, stride: size, lengths: lengths)
                        for i in 0..<part.count where lengths[i] >= 0 {
                            try body(start + i, UnsafeRawBufferPointer(start: scratch.baseAddress! + i * size, count: lengths[i]))
                        }
                        start = end
                    }
                }
            }
        }
        return hits
    }

    /// The values of many keys as bytes (nil for a miss).
    public func bytes(_ hashes: [UInt32]) throws(ShmError) -> [[UInt8]?] {
        var values = [[UInt8]?](repeating: nil, count: hashes.count)
        do {
            try get(hashes) { index, value in values[index] = Array(value) }
        } catch let error as ShmError {
            throw error
        } catch {
            fatalError("unreachable: \(error)")
        }
        return values
    }

    /// One window under the lock (exact LRU): find every key, ask for the lines
    /// their promotions will relink, then copy and promote each hit in order.
    @inline(__always)
    func _getWindowLocked(
        _ keys: UnsafePointer<UInt32>, _ range: Range<Int>, base: UnsafeMutableRawPointer, stride: Int,
        lengths: UnsafeMutableBufferPointer<Int>, _ operation: @autoclosure () -> String
    ) throws(ShmError) -> Int {
        try _withLock(operation()) { () throws(ShmError) -> Int in
            let now = _lockedNow()
            var hits = 0
            for i in range {
                let target = UnsafeMutableRawBufferPointer(start: base + i &* stride, count: stride)
                guard let found = _find(keys[i]) else {
                    lengths[i] = -1
                    _countMiss()
                    continue
                }
                _prefetchNeighbours(found.slot)
                lengths[i] = try _copyLocked(found.slot, into: target, operation())
                try _promoteLocked(found.slot, now: now)
                _countHit()
                hits &+= 1
            }
            return hits
        }
    }

    /// The first two passes over a window: every key's home index entry, then the
    /// record each names (its header and payload lines). Racy reads used for
    /// nothing but prefetch addresses (see `_Probe.warm(_:)`).
    @inline(__always)
    func _prefetchBatch(_ keys: UnsafePointer<UInt32>, count: Int) {
        guard _attachment.isAttached else { return }  // never touch a gone mapping
        let p = _probe
        for i in 0..<count { p.prefetchHome(keys[i]) }
        for i in 0..<count { p.warm(keys[i]) }
    }
}
