// `make fuzz`: the libFuzzer entry point. The Makefile compiles this file
// together with the ShmLRU library's sources into one module (so it reaches the
// package-internal `_CorruptionHarness`) with `-sanitize=fuzzer,address`.
//
// Every input goes through the real attach path: the harness copies one of its
// valid images (a cache segment, or for an input starting with "S" a store segment,
// see _StoreCorruptionHarness) into a real SysV segment; for a cache, it copies one of its
// valid cache images into a real SysV segment, corrupts it as the input says,
// attaches, verifies, operates, repairs, and requires a clean verify() after the
// repair. Inputs starting with "P" are snapshot files restored into a store, every
// restored value checked (_SnapshotCorruptionHarness). A finding aborts (libFuzzer saves the input); so does any crash, and
// AddressSanitizer reports any access past the segment's real size (the slack
// up to the page end is poisoned).
import Glibc

@_silgen_name("__asan_poison_memory_region")
func _asanPoison(_ address: UnsafeRawPointer, _ size: Int)

/// The segment's size: 8-aligned but not a page multiple, so there is slack to poison.
/// Just under two pages: TinyLFU's image needs them since its mini caches
/// (a use ring and four minis of at least 10 records: ~5 KiB), and a smaller
/// segment for the other policies would leave TinyLFU's out of the fuzzing.
/// Attach, verify, repair and rebuild are linear in the records, and each input
/// runs verify() three times: at one page (4,056 bytes, 32 to 60 records) the
/// same cache inputs took two thirds of the CPU (replaying one corpus of 805
/// inputs twice: 2.2 s against 3.2-3.7 s), for the same code paths.
let fuzzRegionBytes = 8_088

nonisolated(unsafe) var fuzzHarness: _CorruptionHarness? = nil
nonisolated(unsafe) var fuzzStoreHarness: _StoreCorruptionHarness? = nil
/// A store sized by memory (value heap, spilled values): inputs starting with "M".
nonisolated(unsafe) var fuzzMemoryStoreHarness: _StoreCorruptionHarness? = nil
/// Snapshot files (the reader and restore): inputs starting with "P".
nonisolated(unsafe) var fuzzSnapshotHarness: _SnapshotCorruptionHarness? = nil

func makeFuzzStoreHarness(memory: Bool = false) -> _StoreCorruptionHarness {
    do {
        let harness = try _StoreCorruptionHarness(memory: memory)
        let (base, byteCount) = harness.storeSegment
        let pageEnd = (byteCount + 4_095) & ~4_095
        if pageEnd > byteCount { _asanPoison(base + byteCount, pageEnd - byteCount) }
        print("shmlru-fuzz: store segment of \(byteCount) bytes")
        return harness
    } catch {
        fatalError("shmlru-fuzz: cannot set up the store: \(error)")
    }
}

func makeFuzzHarness() -> _CorruptionHarness {
    do {
        let region = try ShmRegion.create(byteCount: fuzzRegionBytes)
        try region.remove()  // gone when this process ends, however it ends
        let pageEnd = (fuzzRegionBytes + 4_095) & ~4_095
        _asanPoison(region._attachment.base + fuzzRegionBytes, pageEnd - fuzzRegionBytes)
        let harness = try _CorruptionHarness(region: region)
        print("shmlru-fuzz: segment of \(fuzzRegionBytes) bytes; images: \(harness.shapes.joined(separator: "; "))")
        return harness
    } catch {
        fatalError("shmlru-fuzz: cannot set up: \(error)")
    }
}

/// Inputs whose first byte is "S" go to the store segment (the rest of the
/// input, after that byte), "M" to a store sized by memory (value heap), "P" to
/// the snapshot reader and restore (_SnapshotCorruptionHarness: a valid snapshot
/// image patched, or raw bytes); the others to the cache segment (every bit of the
/// cache harness's first byte selects something, so the store takes one value).
@_cdecl("LLVMFuzzerTestOneInput")
public func shmlruFuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    if size > 0, let data, data[0] == UInt8(ascii: "P") {
        let harness: _SnapshotCorruptionHarness
        if let existing = fuzzSnapshotHarness {
            harness = existing
        } else {
            do { harness = try _SnapshotCorruptionHarness() } catch { fatalError("shmlru-fuzz: cannot set up the snapshot stores: \(error)") }
            print("shmlru-fuzz: snapshot images of \(harness.images.map(\.count)) bytes")
            fuzzSnapshotHarness = harness
        }
        do {
            try harness.run(UnsafeRawBufferPointer(start: data + 1, count: size - 1))
        } catch {
            print("shmlru-fuzz: FINDING (snapshot): \(error)")
            abort()
        }
        return 0
    }
    if size > 0, let data, data[0] == UInt8(ascii: "S") || data[0] == UInt8(ascii: "M") {
        let memory = data[0] == UInt8(ascii: "M")
        let harness = (memory ? fuzzMemoryStoreHarness : fuzzStoreHarness) ?? makeFuzzStoreHarness(memory: memory)
        if memory { fuzzMemoryStoreHarness = harness } else { fuzzStoreHarness = harness }
        do {
            try harness.run(UnsafeRawBufferPointer(start: data + 1, count: size - 1))
        } catch {
            print("shmlru-fuzz: FINDING (store segment): \(error)")
            abort()
        }
        return 0
    }
    let harness = fuzzHarness ?? makeFuzzHarness()
    fuzzHarness = harness
    do {
        try harness.run(UnsafeRawBufferPointer(start: data, count: size))
    } catch {
        print("shmlru-fuzz: FINDING: \(error)")
        abort()
    }
    return 0
}
