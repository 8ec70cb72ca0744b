// The decoded cache's table: entries keyed by the key's 32-bit table hash (`_tableHash`), in
// one open-addressed array (linear probing, backward-shift deletion, at most
// half full). A lookup multiplies the hash once and compares UInt32s: no
// `Hasher` (a `[UInt32: Entry]` spent ~200 instructions per hit on SipHash and
// its probing), no String. Not thread-safe: `_DecodedCache` guards it.
//
// Layout (issue 28, the 1M read's cache misses): what a hit reads of a position
// (`_DecodedLine`: the hash, the record's slot and sequence, the expiry, the
// type, the box, and the key itself when it is at most 16 bytes) is one
// 64-byte line, in an array allocated on a 64-byte boundary, so a lookup that
// finds its key at its home touches one cache line of the table. (Three
// parallel arrays, the hashes, the used flags and 64-byte entries that began
// mid-line, touched ~2.6 lines per hit: cachegrind at 1M, ~1.8 of them missing
// the last-level cache.) What only an insert, a removal or the trim reads (the
// cost and the insertion order) is in a second array (`_DecodedCold`). An
// empty position is one whose `box` is nil. The line is a plain value: the
// table holds its box with a reference it counts itself (retained when kept,
// released when replaced or removed and when the table goes), so that a hit
// reads the box's address without a retain and a release.

/// Up to 16 bytes of a key, zero-padded into two words, and its length: equal
/// inline keys are equal byte strings (`isInline`); a longer key is represented
/// by its length only (the record check then compares its bytes in the record).
struct _InlineKey: Equatable, Sendable {
    var w0: UInt64 = 0
    var w1: UInt64 = 0
    /// The key's length (saturated to UInt32).
    var count: UInt32 = 0

    /// Keys of at most this many bytes are kept (and compared) inline.
    static let capacity = 16

    @inline(__always) var isInline: Bool { count <= UInt32(_InlineKey.capacity) }

    @inline(__always)
    init(_ bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        count = UInt32(truncatingIfNeeded: min(n, Int(UInt32.max)))
        guard n <= _InlineKey.capacity, n > 0, let base = bytes.baseAddress else { return }
        if n >= 8 {
            w0 = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
            let rest = n &- 8
            if rest == 8 {
                w1 = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            } else if rest > 0 {
                w1 = _tailWord(base + 8, rest)
            }
        } else {
            w0 = _tailWord(base, n)
        }
    }

    init() {}
}

/// A position of the table: every field a decoded-cache hit reads, in one
/// 64-byte line (`MemoryLayout<_DecodedLine>.stride` is 64; the storage is
/// 64-byte aligned). `box == nil`: an empty position.
struct _DecodedLine {
    /// The key's table hash (`_tableHash`).
    var hash: UInt32 = 0
    /// The data record the value was decoded from: its slot and even sequence.
    var slot: UInt32 = 0
    var seq: UInt32 = 0
    /// The record's LRU hash (the key's hash, or a probe hash after it).
    var recordHash: UInt32 = 0
    /// The entry's expiry (CLOCK_MONOTONIC ns, 0 never).
    var expiresAt: UInt64 = 0
    /// The decoded value's type.
    var type = ObjectIdentifier(_DecodedLine.self)
    /// The `_DecodedBox` of the value, held by the table (one reference it
    /// retained); nil: empty position.
    var box: Unmanaged<AnyObject>? = nil
    /// The key (inline when at most 16 bytes).
    var key = _InlineKey()
    /// A get must renew the entry's age (then it takes the lock).
    var renews = false
}

/// What only an insert, a removal and the trim read of a position.
struct _DecodedCold {
    var cost = 0
    var order: UInt64 = 0
}

final class _DecodedTable {
    /// `capacity` positions (a power of two, or 0), 64-byte aligned.
    private var lines: UnsafeMutablePointer<_DecodedLine>?
    private var cold: [_DecodedCold] = []
    private var capacity = 0
    private(set) var count = 0

    init() {}

    deinit { release() }

    /// Releases every box and the storage.
    private func release() {
        guard let lines else { return }
        for at in 0..<capacity { lines[at].box?.release() }
        UnsafeMutableRawPointer(lines).deallocate()
        self.lines = nil
    }

    /// The position of `key`'s home (Fibonacci hashing: the hash's high bits, well mixed).
    @inline(__always)
    private static func home(_ key: UInt32, _ mask: Int) -> Int {
        Int(truncatingIfNeeded: (UInt64(key) &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// The position holding `key`, if any.
    @inline(__always)
    private func position(_ key: UInt32) -> Int? {
        guard let lines else { return nil }
        let mask = capacity &- 1
        var at = _DecodedTable.home(key, mask)
        while lines[at].box != nil {
            if lines[at].hash == key { return at }
            at = (at &+ 1) & mask
        }
        return nil
    }

    /// Runs `body` on the line of `key` in place (its box lent: not retained); nil if absent.
    @inline(__always)
    func withLine<R>(_ key: UInt32, _ body: (UnsafePointer<_DecodedLine>) -> R?) -> R? {
        guard let lines, let at = position(key) else { return nil }
        return body(lines + at)
    }

    /// The line, its value (a reference taken) and the cold fields of `key`; nil if absent.
    func entry(_ key: UInt32) -> (line: _DecodedLine, value: AnyObject, cold: _DecodedCold)? {
        guard let lines, let at = position(key), let box = lines[at].box else { return nil }
        return (lines[at], box.takeUnretainedValue(), cold[at])
    }

    /// The cold fields of `key`; nil if absent.
    func cold(_ key: UInt32) -> _DecodedCold? { position(key).map { cold[$0] } }

    /// Keeps `line` with `value` as its box (retained here) and `cold` for
    /// `line.hash`; returns the replaced entry's cold fields.
    @discardableResult
    func update(_ line: _DecodedLine, value: AnyObject, _ newCold: _DecodedCold) -> _DecodedCold? {
        var line = line
        line.box = .passRetained(value)
        return place(line, newCold)
    }

    /// Keeps `line`, whose box reference the table now owns.
    @discardableResult
    private func place(_ line: _DecodedLine, _ newCold: _DecodedCold) -> _DecodedCold? {
        if let lines, let at = position(line.hash) {
            let old = cold[at]
            lines[at].box?.release()
            lines[at] = line
            cold[at] = newCold
            return old
        }
        if (count &+ 1) &* 2 > capacity { grow() }
        let lines = lines!
        let mask = capacity &- 1
        var at = _DecodedTable.home(line.hash, mask)
        while lines[at].box != nil { at = (at &+ 1) & mask }
        lines[at] = line
        cold[at] = newCold
        count &+= 1
        return nil
    }

    /// Removes the entry of `key`; returns its cold fields.
    @discardableResult
    func remove(_ key: UInt32) -> _DecodedCold? {
        guard let lines, var hole = position(key) else { return nil }
        let old = cold[hole]
        lines[hole].box?.release()
        let mask = capacity &- 1
        // Backward shift: move each later entry of the run into the hole if its home allows.
        var at = (hole &+ 1) & mask
        while lines[at].box != nil {
            let wanted = _DecodedTable.home(lines[at].hash, mask)
            // Movable when its home is not in (hole, at] cyclically.
            let between = hole <= at ? (wanted > hole && wanted <= at) : (wanted > hole || wanted <= at)
            if !between {
                lines[hole] = lines[at]
                cold[hole] = cold[at]
                hole = at
            }
            at = (at &+ 1) & mask
        }
        lines[hole] = _DecodedLine()
        cold[hole] = _DecodedCold()
        count &-= 1
        return old
    }

    func removeAll() {
        release()
        cold = []
        capacity = 0
        count = 0
    }

    private func grow() {
        let old = (lines, capacity, cold)
        let size = Swift.max(16, capacity &* 2)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: size &* MemoryLayout<_DecodedLine>.stride, alignment: 64)
        let fresh = raw.bindMemory(to: _DecodedLine.self, capacity: size)
        fresh.initialize(repeating: _DecodedLine(), count: size)
        lines = fresh
        capacity = size
        cold = [_DecodedCold](repeating: _DecodedCold(), count: size)
        count = 0
        guard let previous = old.0 else { return }
        for at in 0..<old.1 where previous[at].box != nil { place(previous[at], old.2[at]) }  // the references move
        UnsafeMutableRawPointer(previous).deallocate()
    }
}
