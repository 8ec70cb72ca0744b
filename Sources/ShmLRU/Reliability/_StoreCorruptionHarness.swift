import CShm

// Test-only: compiled into this package's own test builds (SHMLRU_TESTING: the FaultInjection trait, `make fuzz`), never into an app's build.
#if SHMLRU_TESTING

/// Feeds hostile store segments through the real attach path, as
/// `_CorruptionHarness` does for cache segments: the seeded-mutator test and
/// `make fuzz` both drive it.
///
/// It owns one real store (a store segment and its data segment). At init it
/// fills the store (values, a lock taken and released, changes in the log) and
/// keeps both segments' bytes as images. For each input it copies the images
/// back, corrupts the store segment as the input says (header words, lock slots,
/// waiter entries, change-log entries and head, raw bytes), then attaches,
/// listens, reads the change log from an input-chosen cursor, sets, gets,
/// removes, locks (with short timeouts) and detaches. Typed errors are expected;
/// anything else (a crash, an out-of-bounds access, an untyped failure) is a finding.
///
/// With `memory: true` the store is sized by memory (a value heap after the
/// change log, three values spilled to it): patches also hit the heap header,
/// chunk headers and the spilled records' descriptors in the data segment, and
/// the exercise gets, sets and verifies large values.
///
/// The lock table's mutex line is restored from the image after patching: a
/// forged mutex only makes lockers wait for their timeout (its own test covers
/// it), and would make fuzzing crawl.
package final class _StoreCorruptionHarness {
    package let key: ShmKey
    let store: ShmStore
    let storeImage: [UInt8]
    let dataImage: [UInt8]
    let layout: _StoreLayout
    /// Data-segment offsets of the spilled records' descriptors (memory mode).
    let descriptorOffsets: [Int]

    /// What became of one input.
    package enum Outcome: Equatable, Sendable {
        case rejected(ShmError.Code)
        case attached
    }

    /// Creates the store under a free random key (removed at once: it goes when
    /// this process ends) and takes the images.
    package init(memory: Bool = false) throws(ShmError) {
        var created: ShmStore? = nil
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<100 where created == nil {
            let candidate = ShmKey(UInt32.random(in: 0x6000_0000...0x6FFF_FFFF, using: &generator))
            do {
                created = try ShmStore.create(
                    key: candidate,
                    configuration: memory
                        ? .init(memory: 64 << 10, maxValueSize: 4096, expectedEntries: 8, lockSlots: 4, lockWaiters: 4, changeLogCapacity: 8)
                        : .init(capacity: 8, recordSize: 64, lockSlots: 4, lockWaiters: 4, changeLogCapacity: 8))
            } catch where error.code == .exists {
                continue
            }
        }
        guard let store = created else { throw ShmError(.exists, "_StoreCorruptionHarness", detail: "no free key") }
        self.store = store
        key = store.key
        layout = store._store.layout
        for index in 0..<10 { try store.set("key\(index)", bytes: [UInt8](repeating: UInt8(index), count: index * 3)) }
        _ = try store.remove("key3")
        let token = try store.blockingLock("locked")
        try store.unlock("locked", token)
        _ = try store.tryLock("held")  // held by this process while it lives
        var descriptors: [Int] = []
        if memory {
            for (index, length) in [1500, 3000, 4096].enumerated() {
                try store.set("big\(index)", bytes: [UInt8](repeating: UInt8(index + 1), count: length))
            }
            let dataBase = UnsafeRawPointer(store.cache.region._attachment.base)
            try store.cache._withLockedHandle("_StoreCorruptionHarness") { (lru) throws(ShmError) in
                try lru.walkThrowing(from: .mostRecent) { (slot) throws(ShmError) -> Bool in
                    let payload = try lru.value(slot)
                    if let header = _PayloadHeader.read(payload), store._isSpilled(header), let start = header.value(in: payload).baseAddress {
                        descriptors.append(start - dataBase)
                    }
                    return true
                }
            }
        }
        descriptorOffsets = descriptors
        storeImage = store._storeRegion.withImage()
        dataImage = store.cache.region.withImage()
        try store.cache.region.remove()
        try store._storeRegion.remove()
    }

    /// The store segment's base and size (for the fuzz target's poisoning).
    package var storeSegment: (base: UnsafeMutableRawPointer, byteCount: Int) {
        (store._storeRegion._attachment.base, store._storeRegion.byteCount)
    }

    /// Runs one input. Throws a `Finding` when the library misbehaved.
    @discardableResult
    package func run(_ input: UnsafeRawBufferPointer) throws(_CorruptionHarness.Finding) -> Outcome {
        var reader = _InputReader(input)
        let selector = reader.byte()
        let base = store._storeRegion._attachment.base
        let size = store._storeRegion.byteCount
        storeImage.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: storeImage.count) }
        let dataBase = store.cache.region._attachment.base
        dataImage.withUnsafeBytes { dataBase.copyMemory(from: $0.baseAddress!, byteCount: dataImage.count) }

        if !descriptorOffsets.isEmpty, selector & 0x20 != 0, reader.remaining >= 5 {  // a spilled record's descriptor word
            let place = Int(reader.byte())
            let offset = descriptorOffsets[place % descriptorOffsets.count] + (place >> 2) % (_ValueHeap.descriptorSize / 4) * 4
            dataBase.storeBytes(of: reader.word32(), toByteOffset: offset, as: UInt32.self)
        }
        switch selector & 3 {
        case 2:  // raw bytes over the header and what follows
            reader.copy(into: base, count: min(reader.remaining, size))
        case 3:  // raw bytes at an offset chosen by the input
            let offset = Int(reader.word32()) % size
            reader.copy(into: base + offset, count: min(reader.remaining, size - offset))
        default:
            while reader.remaining > 0 { patch(base: base, size: size, reader: &reader) }
        }
        storeImage.withUnsafeBytes { (base + _StoreLayout.H.mutex).copyMemory(from: $0.baseAddress! + _StoreLayout.H.mutex, byteCount: 64) }

        let attached: ShmStore
        do throws(ShmError) {
            // ShmStore.attach(key:) on fresh attachments of the same segments (by id:
            // the keys were removed at init, so nothing outlives the process).
            let region = try store._storeRegion._reattach()
            let (layout, configuration, lruKey) = try ShmStore._validateHeader(of: region, wait: .zero)
            guard lruKey == store.cache.key else {
                throw ShmError(.corrupted, "attach", detail: "the header names another data segment (\(lruKey))")
            }
            attached = try ShmStore._attach(
                storeRegion: region, layout: layout, configuration: configuration, data: try store.cache.region._reattach(), hash: nil)
        } catch {
            guard error.code == .incompatibleSegment || error.code == .corrupted else {
                throw _CorruptionHarness.Finding(description: "store attach failed with an unexpected error: \(error)")
            }
            return .rejected(error.code)
        }
        exercise(attached, selector: selector, reader: &reader)
        do { try attached.detach() } catch {
            throw _CorruptionHarness.Finding(description: "store detach failed: \(error)")
        }
        return .attached
    }

    /// One 9-byte patch: what to hit (1 byte), where (4), the value (4).
    func patch(base: UnsafeMutableRawPointer, size: Int, reader: inout _InputReader) {
        let target = reader.byte()
        let place = Int(reader.word32())
        let raw = reader.word32()
        let interesting: [UInt32] = [0, 1, 2, UInt32(layout.logCapacity), UInt32(layout.recordSize), .max, .max / 2, 0xFFFF_F000, raw]
        let value = target & 0x80 != 0 ? raw : interesting[Int(raw >> 28) % interesting.count]
        if layout.heapChunks > 0, target & 0x40 != 0 {  // the value heap: a header word, or a chunk header word
            let offset =
                target & 0x08 != 0
                ? layout.heapOffset + place % (_ValueHeap.headerSize / 4) * 4
                : layout.heapOffset + _ValueHeap.headerSize + place % layout.heapChunks * _ValueHeap.chunkSize
                    + (place >> 16) % (_ValueHeap.chunkHeaderSize / 4) * 4
            if offset + 4 <= size { base.storeBytes(of: value, toByteOffset: offset, as: UInt32.self) }
            return
        }
        func put(_ offset: Int, _ word: UInt32) {
            guard offset >= 0, offset + 4 <= size, offset < _StoreLayout.H.mutex || offset >= _StoreLayout.H.mutex + 64 else { return }
            base.storeBytes(of: word, toByteOffset: offset, as: UInt32.self)
        }
        switch target & 7 {
        case 0:  // a header word (the mutex line excluded)
            put(place % (_StoreLayout.headerSize / 4) * 4, value)
        case 1:  // a lock slot field
            put(layout.lockSlotOffset(place % layout.lockSlots) + (place >> 8) % (layout.lockSlotStride / 4) * 4, value)
        case 2:  // a waiter entry field
            put(layout.waiterOffset(place % layout.waiterSlots) + (place >> 8) % (_StoreLayout.waiterSize / 4) * 4, value)
        case 3:  // a change-log entry's seq, kind or length
            let fields = [_StoreLayout.E.seq, _StoreLayout.E.seq + 4, _StoreLayout.E.kind, _StoreLayout.E.length]
            put(layout.logEntryOffset(UInt64(place % layout.logCapacity)) + fields[(place >> 8) % fields.count], value)
        case 4:  // a change-log payload word (key length, expiry, key, value)
            put(layout.logEntryOffset(UInt64(place % layout.logCapacity)) + _StoreLayout.E.payload + (place >> 8) % (layout.recordSize / 4) * 4, value)
        case 5:  // the log head (64 bits), word or waiter count
            if place & 3 == 3 {
                base.storeBytes(of: UInt64(raw) << 32 | UInt64(value), toByteOffset: _StoreLayout.H.logHead, as: UInt64.self)
            } else {
                put([_StoreLayout.H.logHead, _StoreLayout.H.logWord, _StoreLayout.H.logWaiters][place & 3], value)
            }
        default:  // one raw byte anywhere outside the mutex
            let offset = place % size
            if offset < _StoreLayout.H.mutex || offset >= _StoreLayout.H.mutex + 64 {
                base.storeBytes(of: UInt8(truncatingIfNeeded: raw), toByteOffset: offset, as: UInt8.self)
            }
        }
    }

    /// Listen, read the log, set / get / remove / lock on an attached (possibly corrupt) store.
    func exercise(_ store: ShmStore, selector: UInt8, reader: inout _InputReader) {
        let changes = store.listenAll()  // starts the pump on the (forged) log
        _ = changes
        var buffer = [UInt8](repeating: 0, count: store._store.layout.recordSize)
        let head = store._store.logHead
        let from = head &- UInt64(reader.byte()) &* UInt64(selector & 0x10 != 0 ? 0x0100_0000_0000 : 1)
        _ = store._hub.read(from: from, to: head, buffer: &buffer)
        _ = store._hub.read(from: 0, to: min(head, UInt64(store._store.layout.logCapacity) * 2), buffer: &buffer)
        for name in ["key0", "key1", "key5", "locked", "held", "new\(reader.byte())"] {
            _ = try? store.bytes(name)
            _ = try? store.contains(name)
        }
        try? store.set("key\(reader.byte() % 12)", bytes: [1, 2, 3])
        try? store.set("fresh", bytes: [UInt8](repeating: 7, count: Int(reader.byte() % 48)))
        _ = try? store.remove("key\(reader.byte() % 12)")
        _ = try? store.keys()
        _ = try? store.purgeExpired()
        if store._heap != nil {  // large values over the (possibly corrupt) heap
            for index in 0..<3 { _ = try? store.bytes("big\(index)") }
            _ = try? store.verify()
            try? store.set("big\(reader.byte() % 4)", bytes: [UInt8](repeating: 9, count: 1000 + Int(reader.byte()) * 12))
            _ = try? store.bytes("big\(reader.byte() % 4)")
            _ = try? store.remove("big\(reader.byte() % 4)")
            _ = try? store.memoryUsage()
        }
        for name in ["locked", "held", "other\(reader.byte() % 4)"] {
            if let token = try? store.tryLock(name) { try? store.unlock(name, token) }
            if let token = try? store.blockingLock(name, timeout: .milliseconds(2)) { try? store.unlock(name, token) }
            _ = try? store.lockState(name)
        }
        _ = try? store.verify()
    }
}

extension ShmRegion {
    /// The segment's bytes (a copy).
    fileprivate func withImage() -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: _attachment.base, count: byteCount))
    }
}
#endif  // SHMLRU_TESTING
