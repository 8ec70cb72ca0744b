import Glibc

// Test-only: compiled into test builds (SHMLRU_TESTING: debug builds, `make fuzz`), never into a release.
#if SHMLRU_TESTING

/// Feeds damaged and hostile snapshot files through the real reader and restore
/// path: the seeded-mutation test (StoreSnapshotTests) and `make fuzz` (inputs
/// starting with "P") both drive it.
///
/// At init it fills three stores (sized by records with S3-FIFO and lives, by
/// records with exact LRU, by memory with spilled values) with the same keys,
/// each key's value derived from the key alone (`value(for:)`), and keeps a
/// snapshot image of each. It owns two target stores (one sized by records, one
/// by memory). For each input it builds a file (an image patched as the input
/// says, or the input's raw bytes), empties a target and restores the file into
/// it. Typed errors are expected; a key the images do not hold, a value that is
/// not its key's, a count that does not add up, or an untyped failure is a
/// finding, and a crash is one by itself.
package final class _SnapshotCorruptionHarness {
    /// The valid snapshot images.
    package let images: [[UInt8]]
    /// Every key the images hold.
    package let keys: Set<String>
    let targets: [ShmStore]

    /// What became of one file.
    package enum Outcome: Equatable, Sendable {
        /// Refused before any entry (header damage, newer version).
        case rejected(ShmError.Code)
        /// Restored this many entries; `damaged` when the reader stopped at damage.
        case restored(Int, damaged: Bool)
    }

    /// The value every image holds for `key`: derived from it alone, with a length that
    /// varies by key (some spill to a value heap), so a value moved to another key never passes.
    package static func value(for key: String) -> [UInt8] {
        let hash = _fnv1a64(Array(key.utf8))
        let length = key.hasPrefix("big") ? 1_000 + Int(hash % 2_500) : Int(hash % 90)
        return (0..<length).map { UInt8(truncatingIfNeeded: hash >> UInt64(($0 % 8) * 8) &+ UInt64($0)) }
    }

    /// Creates the stores under free random keys (removed at once: they go when
    /// this process ends), fills them and takes the images.
    package init() throws(ShmError) {
        func store(_ configuration: ShmStore.Configuration) throws(ShmError) -> ShmStore {
            var generator = SystemRandomNumberGenerator()
            for _ in 0..<100 {
                let candidate = ShmKey(UInt32.random(in: 0x7000_0000...0x7FFF_FFFF, using: &generator))
                do {
                    let created = try ShmStore.create(key: candidate, configuration: configuration)
                    try created.remove()
                    return created
                } catch where error.code == .exists {
                    continue
                }
            }
            throw ShmError(.exists, "_SnapshotCorruptionHarness", detail: "no free key")
        }
        let sources = [
            try store(.init(capacity: 48, recordSize: 160)),
            try store(.init(capacity: 48, recordSize: 160, policy: .lru, promotion: .onEveryRead)),
            try store(.init(memory: 96 << 10, maxValueSize: 4096, expectedEntries: 48, lockSlots: 4, lockWaiters: 4, changeLogCapacity: 8)),
        ]
        var names: [String] = (0..<36).map { "key\($0)" }
        names += ["", "ключ", "k\u{1F511}"]
        var images: [[UInt8]] = []
        var keys = Set<String>()
        for (index, source) in sources.enumerated() {
            var all = names
            if index == 2 { all += (0..<5).map { "big\($0)" } }
            for (n, name) in all.enumerated() {
                try source.set(name, bytes: Self.value(for: name), expiry: n % 3 == 0 ? .after(.seconds(3_600)) : .never)
                keys.insert(name)
            }
            for name in all.prefix(10) { _ = try source.bytes(name) }  // uses, for the policy's order
            images.append(try source._snapshotImage())
            try source.detach()
        }
        self.images = images
        self.keys = keys
        targets = [
            try store(.init(capacity: 64, recordSize: 160)),
            try store(.init(memory: 96 << 10, maxValueSize: 4096, expectedEntries: 64, lockSlots: 4, lockWaiters: 4, changeLogCapacity: 8)),
        ]
    }

    /// Runs one fuzz input: its first byte chooses the image (bits 0-1), the target
    /// (bit 2) and raw mode (bit 7: the rest of the input is the file); otherwise the
    /// rest is patches of 4 bytes (kind, position low, position high, byte): set,
    /// xor, cut the file there, insert a byte.
    @discardableResult
    package func run(_ input: UnsafeRawBufferPointer) throws(_CorruptionHarness.Finding) -> Outcome {
        var reader = _InputReader(input)
        let selector = reader.byte()
        var file: [UInt8]
        if selector & 0x80 != 0 {
            file = []
            while reader.remaining > 0 { file.append(reader.byte()) }
        } else {
            file = images[Int(selector & 3) % images.count]
            while reader.remaining >= 4 {
                let kind = reader.byte()
                let position = Int(reader.word16())
                let byte = reader.byte()
                guard !file.isEmpty else { break }
                let at = position % file.count
                switch kind & 3 {
                case 0: file[at] = byte
                case 1: file[at] ^= byte == 0 ? 1 : byte
                case 2: file.removeSubrange(at...)
                default: file.insert(byte, at: at)
                }
            }
        }
        return try check(file, target: Int(selector >> 2) & 1)
    }

    /// Restores `file` into a target emptied first, and checks what it holds.
    @discardableResult
    package func check(_ file: [UInt8], target index: Int = 0) throws(_CorruptionHarness.Finding) -> Outcome {
        let target = targets[index % targets.count]
        do throws(ShmError) {
            for name in try target.keys() { try target.remove(name) }
        } catch {
            throw _CorruptionHarness.Finding(description: "emptying the target failed: \(error)")
        }
        let report: ShmStore.RestoreReport
        do throws(ShmError) {
            report = try target._restore(from: _SnapshotSource(bytes: file), path: "<fuzz>", "_SnapshotCorruptionHarness")
        } catch {
            guard error.code == .snapshotDamaged || error.code == .snapshotVersionTooNew else {
                throw _CorruptionHarness.Finding(description: "restore failed with an unexpected error: \(error)")
            }
            return .rejected(error.code)
        }
        var restored: [(String, [UInt8]?)] = []
        do throws(ShmError) {
            for name in try target.keys() { restored.append((name, try target.bytes(name))) }
        } catch {
            throw _CorruptionHarness.Finding(description: "reading the restored target failed: \(error)")
        }
        for (name, value) in restored {
            guard keys.contains(name) else { throw _CorruptionHarness.Finding(description: "restored a key no image holds: \(name.debugDescription)") }
            guard let value, value == Self.value(for: name) else {
                throw _CorruptionHarness.Finding(description: "restored a wrong value for \(name.debugDescription)")
            }
        }
        guard report.restored + report.skippedExpired + report.skippedNoRoom <= report.entriesInSnapshot, restored.count <= report.restored
        else {
            throw _CorruptionHarness.Finding(description: "counts do not add up: \(report), \(restored.count) keys in the store")
        }
        return .restored(report.restored, damaged: report.damage != nil)
    }
}

#endif
