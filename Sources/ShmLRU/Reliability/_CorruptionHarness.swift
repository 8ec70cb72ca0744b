import CShm

// Test-only: compiled into this package's own test builds (SHMLRU_TESTING: the FaultInjection trait, `make fuzz`), never into an app's build.
#if SHMLRU_TESTING

/// Feeds hostile segments through the real attach path: the seeded-mutator test
/// (`make test`) and the libFuzzer target (`make fuzz`) both drive it.
///
/// It owns one real SysV region. At init it lays out a few valid caches of
/// different shapes in it and keeps their bytes as images. For each input it
/// copies an image into the region, corrupts it as the input says (patches to
/// header fields, links, counts, states, index entries, or raw bytes), then
/// attaches, runs `verify()` and a round of operations (whose typed errors are
/// expected), `repair()`s, and requires `verify()` to be clean afterwards and to
/// stay clean through more operations. Anything else (a crash, an out-of-bounds
/// access, a repair that does not repair) is a finding.
///
/// The lock line is restored from the image after patching, except its owner
/// word when the input asks: a word naming no live thread is taken over and
/// repaired (`_SegmentLock`); one naming a live thread that does not hold it
/// would only make lockers wait for their timeout (a separate test covers it).
package final class _CorruptionHarness {
    package let region: ShmRegion
    package let images: [[UInt8]]
    /// Shapes of the images, for reports.
    package let shapes: [String]

    /// What became of one input.
    package enum Outcome: Equatable, Sendable {
        /// Attach refused it with this code.
        case rejected(ShmError.Code)
        /// Attached; whether the first verify() was clean (before any repair).
        case attached(initiallyClean: Bool)
    }

    /// A finding: the library misbehaved on this input.
    package struct Finding: Error, CustomStringConvertible {
        package var description: String
    }

    /// Lays out the images in `region` (which must be read-write and hold at least 4 KiB).
    package init(region: ShmRegion) throws(ShmError) {
        self.region = region
        let base = region._attachment.base
        let size = region.byteCount
        var images: [[UInt8]] = []
        var shapes: [String] = []
        let plans: [(recordSize: Int, index: ShmLRU.IndexKind, fill: Double, slack: Int, policy: ShmLRU.EvictionPolicy)] = [
            (24, .shared, 0.8, 5, .lru), (24, .processLocal, 0.8, 3, .lru), (40, .shared, 1.5, 0, .lru), (8, .shared, 0.5, 40, .lru),
            (24, .shared, 1.5, 0, .sieve), (16, .shared, 2.5, 0, .s3fifo), (24, .processLocal, 1.5, 2, .s3fifo),
            (16, .shared, 2.5, 0, .tinylfu),
        ]
        for plan in plans {
            base.initializeMemory(as: UInt8.self, repeating: 0, count: size)
            let fitting = _Layout.capacity(fitting: size, recordSize: plan.recordSize, indexKind: plan.index, policy: plan.policy)
            let capacity = max(1, fitting - plan.slack)
            let cache = try ShmLRU(
                initializing: region, recordSize: plan.recordSize, capacity: capacity, index: plan.index,
                options: ShmLRU.Options(policy: plan.policy))
            let inserts = Int(Double(capacity) * plan.fill)
            for hash in 0..<UInt32(inserts) {
                let length = Int(hash) % (plan.recordSize + 1)
                try cache.set(hash, [UInt8](repeating: UInt8(truncatingIfNeeded: hash), count: length), shareKey: hash % 3)
                if hash % 5 == 4 { try cache.remove(hash - 2) }
                if hash % 7 == 6 { _ = try cache.bytes(hash / 2) }
            }
            images.append(Array(UnsafeRawBufferPointer(start: base, count: size)))
            shapes.append("\(plan.policy) \(plan.index) record \(plan.recordSize) B x \(capacity), \(cache.count) live")
        }
        self.images = images
        self.shapes = shapes
    }

    /// Header fields a patch may hit (32-bit words), the lock line but its owner word excluded:
    /// the magic, the immutable fields of line 0 (`_Layout.fields`), the lock's owner
    /// word, then every word from the list state to the reserved tail (the fields of
    /// line 6 among them).
    static let headerWords: [Int] = {
        var words = [_Layout.H.magic, _Layout.H.magic + 4]
        words += _Layout.fields.filter { $0.offset < _Layout.H.lock }.flatMap(\.words)
        words += [_Layout.H.lock, _Layout.H.lock + 4]  // the lock's owner word
        words += stride(from: _Layout.H.count, to: _Layout.H.reserved, by: 4)
        return words
    }()

    /// Runs one input. Throws a `Finding` when the library misbehaved.
    @discardableResult
    package func run(_ input: UnsafeRawBufferPointer) throws(Finding) -> Outcome {
        var reader = _InputReader(input)
        let selector = reader.byte()
        let image = images[(Int(selector & 3) | (selector & 0x80 != 0 ? 4 : 0)) % images.count]
        let base = region._attachment.base
        let size = region.byteCount
        image.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: size) }
        let layout = Self.layout(of: image)

        switch selector >> 2 & 3 {
        case 2:  // raw bytes over the header and what follows
            let count = min(reader.remaining, size)
            reader.copy(into: base, count: count)
        case 3:  // raw bytes at an offset chosen by the input
            let offset = Int(reader.word16()) * 4 % size
            let count = min(reader.remaining, size - offset)
            reader.copy(into: base + offset, count: count)
        default:
            while reader.remaining > 0 { Self.patch(base: base, size: size, layout: layout, reader: &reader) }
        }
        // Restore the lock line (see the type's comment); its owner word may stay forged.
        let owner = base.load(fromByteOffset: _Layout.H.lock, as: UInt64.self)
        image.withUnsafeBytes { (base + _Layout.H.lock).copyMemory(from: $0.baseAddress! + _Layout.H.lock, byteCount: _Layout.H.lockReserved) }
        if selector & 0x40 != 0 { base.storeBytes(of: owner, toByteOffset: _Layout.H.lock, as: UInt64.self) }

        // Lock-free reads need the shared index: ask for them only when the header names it.
        let shared = base.load(fromByteOffset: _Layout.H.indexKind, as: UInt32.self) == 1
        let options = ShmLRU.Options(
            promotion: selector & 0x20 != 0 && shared ? .atMostEvery(.milliseconds(1)) : .onEveryRead,
            lockTimeout: .milliseconds(500), attachWait: .zero)
        let cache: ShmLRU
        do {
            cache = try ShmLRU(attaching: region, options: options)
        } catch {
            // A forged owner word can name a live thread (the unknown start time, or
            // the thread's own): it is taken for a live holder, never robbed, and
            // attach gives up at the caller's lock timeout. Only then.
            let forgedLiveHolder =
                error.code == .lockTimeout
                && _SegmentLock.ownerIsAlive(base.load(fromByteOffset: _Layout.H.lock, as: UInt64.self))
            guard error.code == .incompatibleSegment || error.code == .corrupted || forgedLiveHolder else {
                throw Finding(description: "attach failed with an unexpected error: \(error)")
            }
            return .rejected(error.code)
        }
        do {
            let first = try cache.verify()
            Self.exercise(cache, layout: cache._segment.layout, reader: &reader)
            try cache.repair()
            let repaired = try cache.verify()
            guard repaired.isClean else { throw Finding(description: "verify() after repair(): \(repaired)") }
            Self.exercise(cache, layout: cache._segment.layout, reader: &reader)
            let again = try cache.verify()
            guard again.isClean else { throw Finding(description: "verify() after repair() and more operations: \(again)") }
            return .attached(initiallyClean: first.isClean)
        } catch let error as ShmError {
            throw Finding(description: "a locked operation failed after attach: \(error)")
        } catch let finding as Finding {
            throw finding
        } catch {
            throw Finding(description: "\(error)")
        }
    }

    /// The layout an image was made with (images are valid by construction).
    static func layout(of image: [UInt8]) -> _Layout {
        image.withUnsafeBytes { bytes in _Layout.described { bytes.load(fromByteOffset: $0, as: UInt32.self) }! }
    }

    /// One 7-byte patch: what to hit (1 byte), where (2), the value (4).
    static func patch(base: UnsafeMutableRawPointer, size: Int, layout: _Layout, reader: inout _InputReader) {
        let target = reader.byte()
        let place = Int(reader.word16())
        let raw = reader.word32()
        let capacity = UInt32(layout.capacity)
        // Values that matter to links and counts more often than random ones do.
        let interesting: [UInt32] = [
            _Layout.none, 0, 1, capacity &- 1, capacity, capacity &+ 1, raw % max(capacity, 1), UInt32.max / 2, raw,
        ]
        let value = target & 0x80 != 0 ? raw : interesting[Int(raw >> 28) % interesting.count]
        func put(_ offset: Int, _ word: UInt32) {
            guard offset >= 0, offset + 4 <= size else { return }
            base.storeBytes(of: word, toByteOffset: offset, as: UInt32.self)
        }
        let slot = UInt32(place) % max(capacity, 1)
        let record = layout.recordOffset(slot)
        switch target & 7 {
        case 0:  // a header word
            put(headerWords[place % headerWords.count], value)
        case 1:  // a record link
            put(record + (place & 1 == 0 ? _Layout.R.prev : _Layout.R.next), value)
        case 2:  // a list head or count
            let fields = [
                _Layout.H.lruHead, _Layout.H.lruTail, _Layout.H.freeHead, _Layout.H.count, _Layout.H.freeCount, _Layout.H.highWater,
                _Layout.H.sieveHand, _Layout.H.smallTail, _Layout.H.smallCount, _Layout.H.ghostClock, _Layout.H.windowTarget,
                _Layout.H.sketchAdds,
            ]
            put(fields[place % fields.count], value)
        case 3:  // a record's state and length, hash or sequence
            let fields = [_Layout.R.meta, _Layout.R.hash, _Layout.R.seq, _Layout.R.share]
            let field = fields[Int(raw & 3)]
            put(record + field, field == _Layout.R.meta ? (raw >> 8 & 3) << 24 | (raw >> 10 & 0x3F_FFFF) % UInt32(layout.recordSize + 40) : value)
        case 4:  // an index entry, or half of a ghost entry
            if layout.ghostSlots > 0, place & 1 != 0 {
                put(layout.ghostOffset + (place / 2 % (2 * layout.ghostSlots)) * 4, place & 2 != 0 ? raw : value)
            } else if layout.indexSlots > 0 {
                put(layout.indexOffset + (place % layout.indexSlots) * 4, raw)
            }
        case 5:  // a record's stamp
            put(record + _Layout.R.stamp + (place & 1) * 4, raw)
        case 6:  // a link cycle: record -> another, and back
            let other = layout.recordOffset(raw % max(capacity, 1))
            put(record + _Layout.R.next, raw % max(capacity, 1))
            put(other + _Layout.R.next, slot)
            put(other + _Layout.R.prev, slot)
        default:  // one raw byte anywhere outside the lock line
            let offset = (place * 37 + Int(raw & 0xFFFF)) % size
            if offset < _Layout.H.lock || offset >= _Layout.H.lock + _Layout.H.lockReserved {
                base.storeBytes(of: UInt8(truncatingIfNeeded: raw >> 16), toByteOffset: offset, as: UInt8.self)
            }
        }
    }

    /// A round of operations on a (possibly corrupt) cache: typed errors are fine.
    static func exercise(_ cache: ShmLRU, layout: _Layout, reader: inout _InputReader) {
        let hashes: [UInt32] = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, UInt32(reader.byte()), UInt32(reader.word16())]
        for hash in hashes {
            _ = try? cache.bytes(hash)
            _ = try? cache.contains(hash)
            _ = try? cache.lastUsed(hash)
        }
        _ = try? cache.set(7, [1, 2, 3])
        _ = try? cache.set(UInt32(reader.word16()), [UInt8](repeating: 9, count: min(cache.recordSize, 5)))
        _ = try? cache.remove(3)
        _ = try? cache.remove(UInt32(reader.byte()))
        let offset = layout.recordsOffset + Int(reader.word16()) % max(1, layout.capacity) * layout.stride
        for candidate in [offset, offset + 1, 0, layout.totalSize, layout.recordsOffset] {
            _ = try? cache.bytes(atOffset: candidate)
            _ = try? cache.hash(atOffset: candidate)
            try? cache.setShareKey(1, atOffset: candidate)
        }
        _ = try? cache.remove(atOffset: offset)
        _ = try? cache.evict(lastUsedBefore: .now, limit: Int(reader.byte() % 4))
        if reader.byte() & 7 == 5 {  // (past the input, bytes read 0) the dump builds strings: slow, and its walk is verify()'s
            _ = try? cache.dumpJSON()
            _ = try? cache.dumpJSON(backwards: true)
        }
        _ = try? cache.reloadIndex()
        _ = try? cache.reloadIndex(shareKey: 1)
        _ = cache.stats
        _ = cache.count
        if reader.byte() & 15 == 9 { try? cache.removeAll() }
    }
}

/// Reads an input front to back; past its end every read is 0.
package struct _InputReader {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { bytes.count - position }

    mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }
    mutating func word16() -> UInt16 { UInt16(byte()) | UInt16(byte()) << 8 }
    mutating func word32() -> UInt32 { UInt32(word16()) | UInt32(word16()) << 16 }

    mutating func copy(into target: UnsafeMutableRawPointer, count: Int) {
        let count = min(count, remaining)
        guard count > 0, let source = bytes.baseAddress else { return }
        target.copyMemory(from: source + position, byteCount: count)
        position += count
    }
}
#endif  // SHMLRU_TESTING
