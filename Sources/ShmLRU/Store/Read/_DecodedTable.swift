// The decoded cache's table: entries keyed by the key's 32-bit table hash (`_tableHash`), in
// one open-addressed array (linear probing, backward-shift deletion, at most
// half full). A lookup multiplies the hash once and compares UInt32s: no
// `Hasher` (a `[UInt32: Entry]` spent ~200 instructions per hit on SipHash and
// its probing), no String. A hit reads the entry in place (`withEntry`: no
// copy, so no retain of its fields but the one the caller takes). Empty
// positions hold `filler`. Not thread-safe: `_DecodedCache` guards it.

struct _DecodedTable<Entry> {
    private var keys: [UInt32] = []
    private var values: [Entry] = []
    private var used: [Bool] = []
    private(set) var count = 0
    private let filler: Entry

    init(filler: Entry) { self.filler = filler }

    /// The position of `key`'s home (Fibonacci hashing: the hash's high bits, well mixed).
    @inline(__always)
    private func home(_ key: UInt32, _ mask: Int) -> Int {
        Int(truncatingIfNeeded: (UInt64(key) &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// The position holding `key`, if any.
    @inline(__always)
    private func position(_ key: UInt32) -> Int? {
        let mask = keys.count &- 1
        guard mask >= 0 else { return nil }
        var at = home(key, mask)
        while used[at] {
            if keys[at] == key { return at }
            at = (at &+ 1) & mask
        }
        return nil
    }

    subscript(key: UInt32) -> Entry? {
        get { position(key).map { values[$0] } }
        set {
            if let newValue { updateValue(newValue, forKey: key) } else { removeValue(forKey: key) }
        }
    }

    /// Runs `body` on the entry of `key` in place (no copy of the entry); nil if absent.
    @inline(__always)
    func withEntry<R>(_ key: UInt32, _ body: (UnsafePointer<Entry>) -> R?) -> R? {
        guard let at = position(key) else { return nil }
        return values.withUnsafeBufferPointer { buffer in body(buffer.baseAddress! + at) }
    }

    @discardableResult
    mutating func updateValue(_ value: Entry, forKey key: UInt32) -> Entry? {
        if let at = position(key) {
            let old = values[at]
            values[at] = value
            return old
        }
        if (count &+ 1) &* 2 > keys.count { grow() }
        let mask = keys.count &- 1
        var at = home(key, mask)
        while used[at] { at = (at &+ 1) & mask }
        keys[at] = key
        values[at] = value
        used[at] = true
        count &+= 1
        return nil
    }

    @discardableResult
    mutating func removeValue(forKey key: UInt32) -> Entry? {
        guard var hole = position(key) else { return nil }
        let old = values[hole]
        let mask = keys.count &- 1
        // Backward shift: move each later entry of the run into the hole if its home allows.
        var at = (hole &+ 1) & mask
        while used[at] {
            let wanted = home(keys[at], mask)
            // Movable when its home is not in (hole, at] cyclically.
            let between = hole <= at ? (wanted > hole && wanted <= at) : (wanted > hole || wanted <= at)
            if !between {
                keys[hole] = keys[at]
                values[hole] = values[at]
                hole = at
            }
            at = (at &+ 1) & mask
        }
        used[hole] = false
        values[hole] = filler
        count &-= 1
        return old
    }

    mutating func removeAll() { self = _DecodedTable(filler: filler) }

    private mutating func grow() {
        let old = (keys, values, used)
        let size = Swift.max(16, keys.count &* 2)
        keys = [UInt32](repeating: 0, count: size)
        values = [Entry](repeating: filler, count: size)
        used = [Bool](repeating: false, count: size)
        count = 0
        for at in 0..<old.0.count where old.2[at] { updateValue(old.1[at], forKey: old.0[at]) }
    }
}
