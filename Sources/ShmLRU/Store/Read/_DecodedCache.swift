import Synchronization

// The decoded cache (L1): per store handle, the last value this process decoded
// for a key, with the version of the record it came from (the data record's slot
// and seqlock sequence: every write of a record, and every free, changes its
// sequence; see _StoreLayout.swift). A get reuses the decoded value only when
// the record at that slot still has that even sequence (so it is still the
// live record it was, unwritten) and holds a key equal to the asked one, both
// read inside the seqlock (`ShmStore._isUnchanged`), and the entry has not expired. So a peer's write is
// seen by the next get, and a stale or foreign value is never returned; no
// invalidation message is needed (lua-resty-mlcache's L1 needs them; this one
// validates on every read).
//
// Entries are found by the key's table hash (`_tableHash`: a seeded folded
// multiply of the key's UTF-8 bytes, lent without a copy; no String hashing and
// not the store's SipHash, which a hit does not need) in an open-addressed
// table (_DecodedTable.swift: no `Hasher`): a key whose hash another key's entry
// holds finds that entry, fails the record check (the stored key differs),
// reads and decodes, and takes the entry over. A hit (`hit`) reads the entry
// in place under the table's mutex, checks the record there (lock-free reads
// of shared memory: nothing waits under the mutex) and copies the value out of
// its box in the caller's specialised code, taking no reference to the box. The
// record check reads only the words that can tell a change: the record's
// sequence (before and after, the seqlock) and the use stamp it marks, both in
// the record's header line, and the stored key's length and bytes
// (`ShmStore._isUnchanged`) unless the entry keeps the key inline (keys of up
// to 16 bytes, `_InlineKey`): then the hit compares the asked key with the
// entry's copy, and the unchanged sequence says the record still holds that
// key, so the check touches no line of the record but its header's.
//
// Cache lines per hit (cachegrind, 1M entries, ~95K distinct keys hit, issue 28):
// the table's line (one: _DecodedTable.swift), the record's header line, the
// box (~2: its header and the struct), each reference-counted field's object
// (retained by the copy), and the caller's key; 9.0 last-level misses per hit,
// down from 10.8 when the table was three arrays and the check read the key
// from the record (the record's second line).
//
// A key of up to 16 bytes is read once on a hit: its inline form
// (`_InlineKey`, compared with the entry's) and its table hash
// (`_tableHash(_:inline:)`, the same hash `_tableHash` gives from the bytes)
// come from the same two words, and the hit needs no other view of the key
// (`ShmStore._decodedHit`).
//
// Where a hit's instructions go (callgrind, release, 10K entries, 16-byte keys,
// the bench's 8-field struct of which 4 fields are reference-counted; issue
// 28): 732 per get in all, ~205 of them the lookup (the key's inline form ~27,
// table hash ~23, mutex ~15, table ~25, entry checks and record re-sight ~75,
// the cache's use mark ~35); the rest the copy out of the box (its retains,
// through the copy the compiler outlines for a struct of this size, and the
// call of `take`), the caller's destroy of the returned value (its releases,
// through the runtime's value witnesses) and the bench's loop (its key's
// retain and release). No dynamic cast, existential or unspecialised generic
// code runs on a hit. (766 before the table was one line per position and the
// key inline.)
//
// Bounded by entries and bytes (a value's cost is its encoded size plus its
// key's, plus 64 for the entry); the oldest inserted entries go first. Values of
// class types are never cached (a shared instance could be mutated by its
// caller). Thread-safe: one mutex per handle guards the table.

extension ShmStore {
    /// Bounds of a handle's decoded cache (`ShmStore.decodedCacheLimits`).
    public struct DecodedCacheLimits: Sendable, Hashable {
        /// The most decoded values kept; 0 turns the cache off.
        public var maxEntries: Int
        /// The most bytes kept, counting each value as its encoded size plus its key plus 64; 0 turns the cache off.
        public var maxBytes: Int

        public init(maxEntries: Int = 4_096, maxBytes: Int = 4 << 20) {
            self.maxEntries = max(0, maxEntries)
            self.maxBytes = max(0, maxBytes)
        }

        /// No decoded cache: every get decodes.
        public static let disabled = DecodedCacheLimits(maxEntries: 0, maxBytes: 0)
        public var isEnabled: Bool { maxEntries > 0 && maxBytes > 0 }
    }

    /// What a handle's decoded cache holds and did.
    public struct DecodedCacheStats: Sendable, Hashable {
        public var entries: Int
        public var bytes: Int
        /// Gets answered without decoding.
        public var hits: UInt64
        /// Gets that decoded (absent keys not counted).
        public var misses: UInt64
    }

    /// The codec of this handle's `Codable` values (default: `JSONStoreCodec`).
    /// Changing it empties the decoded cache.
    public var codec: any ShmStoreCodec {
        get { _decoded.codec }
        set { _decoded.setCodec(newValue) }
    }

    /// The bounds of this handle's decoded cache; `.disabled` turns it off (and empties it).
    public var decodedCacheLimits: DecodedCacheLimits {
        get { _decoded.limits }
        set { _decoded.setLimits(newValue) }
    }

    public var decodedCacheStats: DecodedCacheStats { _decoded.stats }
}

/// A decoded value, boxed so the table holds any type.
@usableFromInline
final class _DecodedBox<Value>: @unchecked Sendable {
    @usableFromInline let value: Value
    @usableFromInline init(_ value: Value) { self.value = value }
}

/// A box lent by the decoded cache under its mutex, without a reference taken:
/// the table holds it for as long as the borrower runs. (Sendable so that the
/// region checker lets the mutex's state lend it to the caller's closure: the
/// box's value is immutable and never a class instance.)
@usableFromInline
struct _LentBox: @unchecked Sendable {
    @usableFromInline let box: Unmanaged<AnyObject>
    @inline(__always) init(_ box: AnyObject) { self.box = .passUnretained(box) }
    /// A box the lender holds (the decoded cache's table), lent as it is.
    @inline(__always) init(_ box: Unmanaged<AnyObject>) { self.box = box }

    /// The value of the box, a `_DecodedBox<Value>`, copied out.
    @inlinable @inline(__always)
    func value<Value>(as type: Value.Type) -> Value {
        box._withUnsafeGuaranteedRef { unsafeDowncast($0, to: _DecodedBox<Value>.self).value }
    }
}

final class _DecodedCache: Sendable {
    /// Sendable: `value` is an immutable `_DecodedBox` of a value that is not a class instance.
    struct Entry: @unchecked Sendable {
        var slot: UInt32
        var seq: UInt32
        /// The record's LRU hash (the key's hash, or a probe hash after it).
        var recordHash: UInt32
        /// The entry's expiry (CLOCK_MONOTONIC ns, 0 never) and whether a get must renew it (then it takes the lock).
        var expiresAt: UInt64
        var renews: Bool
        var type: ObjectIdentifier
        var value: AnyObject
        /// The key (its bytes when it is at most 16 bytes long: a hit then compares it here, not in the record).
        var key: _InlineKey
        var cost: Int
        var order: UInt64

        init(
            slot: UInt32, seq: UInt32, recordHash: UInt32, expiresAt: UInt64, renews: Bool, type: ObjectIdentifier,
            value: AnyObject, key: _InlineKey, cost: Int, order: UInt64
        ) {
            (self.slot, self.seq, self.recordHash, self.expiresAt, self.renews) = (slot, seq, recordHash, expiresAt, renews)
            (self.type, self.value, self.key, self.cost, self.order) = (type, value, key, cost, order)
        }

        /// The entry the table holds at a position.
        init(_ stored: (line: _DecodedLine, value: AnyObject, cold: _DecodedCold)) {
            let line = stored.line
            self.init(
                slot: line.slot, seq: line.seq, recordHash: line.recordHash, expiresAt: line.expiresAt, renews: line.renews,
                type: line.type, value: stored.value, key: line.key, cost: stored.cold.cost, order: stored.cold.order)
        }

        /// The table's line of this entry (its box not set), for the key of table hash `hash`.
        func line(_ hash: UInt32) -> _DecodedLine {
            _DecodedLine(
                hash: hash, slot: slot, seq: seq, recordHash: recordHash, expiresAt: expiresAt, type: type, box: nil, key: key,
                renews: renews)
        }
    }

    struct State {
        var limits: ShmStore.DecodedCacheLimits
        var codec: any ShmStoreCodec
        /// Guarded by the mutex, like every field here.
        var entries = _DecodedTable()
        /// Insertion order (oldest first from `head`); stale items (replaced or removed keys) are skipped.
        var order: [(key: UInt32, order: UInt64)] = []
        var head = 0
        var bytes = 0
        var next: UInt64 = 0
    }

    let state: Mutex<State>
    let hits = Atomic<UInt64>(0)
    let misses = Atomic<UInt64>(0)
    /// The key of this handle's table hash (`_tableHash`), drawn per handle.
    let tableKey = _SipKey.random()

    /// The table's hash of a key's UTF-8 bytes (not the store's record hash: see `_tableHash`).
    @inline(__always) func tableHash(_ key: UnsafeRawBufferPointer) -> UInt32 { _tableHash(tableKey, key) }
    /// The same hash from the inline form of a key of up to 16 bytes (`_InlineKey.isInline`).
    @inline(__always) func tableHash(inline: _InlineKey) -> UInt32 { _tableHash(tableKey, inline: inline) }
    /// The same hash from the key's inline form when it is inline (`_InlineKey.isInline`), else from its bytes.
    @inline(__always) func tableHash(_ key: UnsafeRawBufferPointer, _ inline: _InlineKey) -> UInt32 {
        inline.isInline ? _tableHash(tableKey, inline: inline) : _tableHash(tableKey, key)
    }

    init(limits: ShmStore.DecodedCacheLimits = .init(), codec: any ShmStoreCodec = JSONStoreCodec()) {
        state = Mutex(State(limits: limits, codec: codec))
    }

    var codec: any ShmStoreCodec { state.withLock { $0.codec } }
    var limits: ShmStore.DecodedCacheLimits { state.withLock { $0.limits } }
    var stats: ShmStore.DecodedCacheStats {
        let (entries, bytes) = state.withLock { ($0.entries.count, $0.bytes) }
        return .init(
            entries: entries, bytes: bytes, hits: hits.load(ordering: .relaxed), misses: misses.load(ordering: .relaxed))
    }

    func setCodec(_ codec: any ShmStoreCodec) {
        state.withLock {
            $0.codec = codec
            Self.clear(&$0)
        }
    }

    func setLimits(_ limits: ShmStore.DecodedCacheLimits) {
        state.withLock {
            $0.limits = limits
            if limits.isEnabled { Self.trim(&$0) } else { Self.clear(&$0) }
        }
    }

    /// What a hit reads of an entry.
    struct _Sight: Sendable {
        var slot: UInt32
        var seq: UInt32
        var box: _LentBox
        /// The asked key was compared with the entry's inline copy (equal): the
        /// record check need not compare it again.
        var keyChecked: Bool
    }

    /// The decoded-cache hit: under the mutex, the entry of hash `key`, if it
    /// holds a value of `type` for a key of `asked`'s length (and bytes, when
    /// inline), needs no renewal, has not expired and `isUnchanged` (slot,
    /// sequence, whether the key still needs comparing in the record) says its
    /// record is as it was, lends its box
    /// to `take` (the caller's specialised code, which copies the value out);
    /// false otherwise. The record check reads shared memory lock-free (it never
    /// waits), so it runs inside the mutex: the entry is read in place, no
    /// reference is taken to the box, and a failed check copies nothing.
    /// Counts the hit.
    @inline(__always)
    func hit(
        _ key: UInt32, asked: _InlineKey, type: ObjectIdentifier,
        _ isUnchanged: (_ slot: UInt32, _ seq: UInt32, _ keyChecked: Bool) -> Bool, _ take: (_LentBox) -> Void
    ) -> Bool {
        let found = state.withLock { state -> Bool in
            // What the hit needs of the entry, read in place (Sendable values only:
            // the caller's closures see nothing of the mutex's state but these).
            let sight = state.entries.withLine(key) { line -> _Sight? in
                guard let box = line.pointee.box, line.pointee.type == type, !line.pointee.renews,
                    line.pointee.key.count == asked.count,
                    line.pointee.expiresAt == 0 || line.pointee.expiresAt > _monotonicNanoseconds()
                else { return nil }
                let inline = asked.isInline
                if inline, line.pointee.key.w0 != asked.w0 || line.pointee.key.w1 != asked.w1 { return nil }  // another key of this hash
                return _Sight(slot: line.pointee.slot, seq: line.pointee.seq, box: _LentBox(box), keyChecked: inline)
            }
            guard let sight, isUnchanged(sight.slot, sight.seq, sight.keyChecked) else { return false }
            take(sight.box)  // the table holds the box until the mutex is released
            return true
        }
        if found { countHit() }
        return found
    }

    /// The entry for the key of hash `key` if it holds a value of `type` (it may
    /// be another key's of the same hash: the record check compares the key).
    @inline(__always)
    func entry(_ key: UInt32, type: ObjectIdentifier) -> Entry? {
        state.withLock { state -> Entry? in
            guard let stored = state.entries.entry(key), stored.line.type == type else { return nil }
            return Entry(stored)
        }
    }

    @inline(__always) func countHit() { hits.store(hits.load(ordering: .relaxed) &+ 1, ordering: .relaxed) }
    @inline(__always) func countMiss() { misses.store(misses.load(ordering: .relaxed) &+ 1, ordering: .relaxed) }

    /// Keeps `entry` for the key of hash `key` (replacing that hash's entry); its
    /// cost is given as the encoded value's size plus the key's.
    func insert(_ key: UInt32, _ entry: Entry) {
        state.withLock { state in
            guard state.limits.isEnabled else { return }
            var entry = entry
            entry.cost = entry.cost &+ 64
            guard entry.cost <= state.limits.maxBytes else {
                if let old = state.entries.remove(key) { state.bytes -= old.cost }
                return
            }
            state.next &+= 1
            entry.order = state.next
            if let old = state.entries.update(entry.line(key), value: entry.value, _DecodedCold(cost: entry.cost, order: entry.order)) {
                state.bytes -= old.cost
            }
            state.bytes += entry.cost
            state.order.append((key, entry.order))
            Self.trim(&state)
        }
    }

    func remove(_ key: UInt32) {
        state.withLock { state in
            if let old = state.entries.remove(key) { state.bytes -= old.cost }
        }
    }

    /// Drops the oldest entries until the limits hold; compacts the order list.
    static func trim(_ state: inout State) {
        while state.entries.count > state.limits.maxEntries || state.bytes > state.limits.maxBytes, state.head < state.order.count {
            let (key, order) = state.order[state.head]
            state.head += 1
            if let cold = state.entries.cold(key), cold.order == order {
                state.entries.remove(key)
                state.bytes -= cold.cost
            }
        }
        // Stale items accumulate when keys are replaced: compact when they are most of the list.
        if (state.head > 0 && state.head >= state.order.count / 2) || state.order.count > 2 * state.entries.count + 64 {
            state.order = state.order[state.head...].filter { item in state.entries.cold(item.key)?.order == item.order }
            state.head = 0
        }
    }

    static func clear(_ state: inout State) {
        state.entries.removeAll()
        state.order = []
        state.head = 0
        state.bytes = 0
    }
}
