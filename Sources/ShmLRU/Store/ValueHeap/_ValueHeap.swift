import CShm

// The value heap of a store sized by memory: fixed 1024-byte chunks at the end
// of the store segment (layout and diagram: _StoreLayout.swift), holding the
// values that do not fit a record, each chained over ceil(n / 1008) chunks
// (memcached's chunked items, without slab classes: one chunk size, so memory
// moves freely between value sizes and there is no class to rebalance).
//
// Every mutation runs under the data segment's lock, between `begin()` (sets
// the heap's busy word) and `end()` (clears it) whenever it leaves the heap
// out of step with the records for a moment; a locker that finds the word set,
// or the data segment rebuilt since (its generation moved), rebuilds the free
// list from the live records (ShmStore+ValueHeapRecovery.swift).
//
// Readers take no lock: a chunk's stamp is written first, then a release
// fence, then its link, length and bytes; a reader loads the stamp (acquire),
// copies, fences and loads it again, and accepts the chunk only if both equal
// the value's stamp (a fresh number per write, so a reused chunk never matches).
// A freed chunk's stamp is cleared first. Every index and length read from the
// segment is checked before use.

struct _ValueHeap: @unchecked Sendable {
    static let chunkSize = 1024
    static let chunkHeaderSize = 16
    static let chunkPayload = chunkSize - chunkHeaderSize
    static let headerSize = 128
    static let descriptorSize = 24
    /// A chunk link that ends a chain or the free list.
    static let end: UInt32 = 0xFFFF_FFFF
    static let maxChunks = Int(UInt32.max) - 1
    /// The largest `maxValueSize` a store takes.
    static let maxValueSizeLimit = 1 << 30

    /// Heap header fields (from the heap's offset).
    enum F {
        static let chunkCount = 0
        static let chunkSize = 4
        static let maxValueSize = 8  // UInt64
        static let memory = 16  // UInt64
        static let freeHead = 64
        static let freeCount = 68
        static let busy = 72
        static let generation = 76
        static let stamp = 80  // UInt64
    }

    /// Chunk header fields.
    enum C {
        static let stamp = 0  // UInt64
        static let next = 8
        static let used = 12
        static let payload = 16
    }

    /// A spilled value's descriptor, as stored after the key in its record.
    struct Descriptor: Equatable {
        var length: Int
        var first: UInt32
        var count: UInt32
        var stamp: UInt64
    }

    /// What `create` lays out (ShmStore+Memory.swift computes it).
    struct Plan {
        var chunks: Int
        var maxValueSize: Int
        var memory: Int
    }

    let segment: _StoreSegment
    let offset: Int
    let chunkCount: Int
    let maxValueSize: Int
    let chunks: UnsafeMutableRawPointer

    /// The heap of a store segment laid out with one (attach validated its header); nil without.
    init?(segment: _StoreSegment, maxValueSize: Int?) {
        guard segment.layout.heapChunks > 0, let maxValueSize else { return nil }
        self.segment = segment
        offset = segment.layout.heapOffset
        chunkCount = segment.layout.heapChunks
        self.maxValueSize = maxValueSize
        chunks = segment.base + offset + _ValueHeap.headerSize
    }

    static func chunks(for length: Int) -> Int { (length + chunkPayload - 1) / chunkPayload }

    // MARK: Create and attach

    /// Writes the heap's own header (the store header's heap fields are in
    /// `_StoreLayout.fields`) and a free list of every chunk (lowest first).
    static func initialize(_ s: _StoreSegment, _ plan: Plan) {
        let layout = s.layout
        let h = layout.heapOffset
        s.store(h + F.chunkCount, UInt32(layout.heapChunks))
        s.store(h + F.chunkSize, UInt32(chunkSize))
        s.store64(h + F.maxValueSize, UInt64(plan.maxValueSize))
        s.store64(h + F.memory, UInt64(plan.memory))
        let first = h + headerSize
        for index in 0..<layout.heapChunks {
            let next = index + 1 < layout.heapChunks ? UInt32(index + 1) : end
            s.store(first + index * chunkSize + C.next, next)
        }
        s.store(h + F.freeHead, 0)
        s.store(h + F.freeCount, UInt32(layout.heapChunks))
    }

    /// Checks the heap's immutable header against the layout (the store header's
    /// heap fields were compared with `_StoreLayout.fields`); returns the memory budget and max value size (nil: no heap).
    static func validate(_ region: ShmRegion, _ layout: _StoreLayout, _ operation: String) throws(ShmError)
        -> (memory: Int, maxValueSize: Int)?
    {
        let base = UnsafeRawPointer(region._attachment.base)
        func u32(_ offset: Int) -> UInt32 { base.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }
        func u64(_ offset: Int) -> UInt64 { base.loadUnaligned(fromByteOffset: offset, as: UInt64.self) }
        guard layout.heapChunks > 0 else { return nil }  // the header's heap fields: `_StoreLayout.fields`
        guard layout.totalSize <= region.byteCount else {
            throw ShmError(.corrupted, operation, detail: "value heap ends at \(layout.totalSize); the segment has \(region.byteCount)")
        }
        let h = layout.heapOffset
        let maxValueSize = u64(h + F.maxValueSize)
        let memory = u64(h + F.memory)
        guard u32(h + F.chunkCount) == UInt32(layout.heapChunks), u32(h + F.chunkSize) == UInt32(chunkSize),
            maxValueSize >= 1, maxValueSize <= UInt64(maxValueSizeLimit),
            2 * chunks(for: Int(maxValueSize)) <= layout.heapChunks, memory >= UInt64(layout.totalSize), memory <= UInt64(Int.max)
        else {
            throw ShmError(.corrupted, operation, detail: "value heap header out of range")
        }
        return (Int(memory), Int(maxValueSize))
    }

    // MARK: Fields

    @inline(__always) func chunk(_ index: UInt32) -> UnsafeMutableRawPointer { chunks + Int(index) &* _ValueHeap.chunkSize }
    @inline(__always) func isChunk(_ index: UInt32) -> Bool { Int(index) < chunkCount }
    var freeHead: UInt32 { segment.load(offset + F.freeHead) }
    var freeCount: Int { Int(segment.load(offset + F.freeCount)) }
    var busy: UInt32 { segment.load(offset + F.busy) }
    var generation: UInt32 { segment.load(offset + F.generation) }
    var lastStamp: UInt64 { segment.load64(offset + F.stamp) }

    /// Marks the heap as being changed (under the data lock): a holder that dies
    /// before `end()` leaves the word set, and the next locker rebuilds the heap.
    func begin() { segment.store(offset + F.busy, 1) }
    func end() { segment.store(offset + F.busy, 0) }

    /// Whether the heap must be rebuilt before use: a holder died inside a
    /// change, or the data segment was rebuilt (records dropped) since.
    @inline(__always) func needsRecovery(dataGeneration: UInt32) -> Bool { busy != 0 || generation != dataGeneration }

    // MARK: Descriptors

    /// The descriptor stored in `bytes` (24 bytes, copied racily: a lock-free
    /// reader may be looking at a record being rewritten); nil when malformed.
    func descriptor(_ bytes: UnsafeRawBufferPointer) -> Descriptor? {
        guard bytes.count == _ValueHeap.descriptorSize, let source = bytes.baseAddress else { return nil }
        var raw: (UInt64, UInt32, UInt32, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &raw) { cshm_racy_copy($0.baseAddress, source, _ValueHeap.descriptorSize) }
        guard raw.0 >= 1, raw.0 <= UInt64(maxValueSize), Int(raw.2) == _ValueHeap.chunks(for: Int(raw.0)), isChunk(raw.1)
        else { return nil }
        return Descriptor(length: Int(raw.0), first: raw.1, count: raw.2, stamp: raw.3)
    }

    static func encode(_ d: Descriptor) -> [UInt8] {
        withUnsafeBytes(of: (UInt64(d.length), d.first, d.count, d.stamp)) { Array($0) }
    }

    // MARK: Reads (lock-free or locked)

    /// Copies the value `d` describes into `target` (d.length bytes), checking
    /// each chunk's stamp before and after its copy, its link and its length.
    /// False when the chain does not hold that value (now): the caller retries,
    /// or under the lock treats the record as broken.
    func read(_ d: Descriptor, into target: UnsafeMutableRawPointer) -> Bool {
        var index = d.first
        var done = 0
        var remaining = Int(d.count)
        while remaining > 0 {
            guard isChunk(index) else { return false }
            let c = chunk(index)
            let stampPointer = (c + C.stamp).assumingMemoryBound(to: UInt64.self)
            guard cshm_load_acquire_u64(stampPointer) == d.stamp else { return false }
            let next = cshm_load_relaxed_u32((c + C.next).assumingMemoryBound(to: UInt32.self))
            let used = Int(cshm_load_relaxed_u32((c + C.used).assumingMemoryBound(to: UInt32.self)))
            guard used == min(_ValueHeap.chunkPayload, d.length &- done) else { return false }
            cshm_racy_copy(target + done, c + C.payload, used)
            cshm_fence_acquire()
            guard cshm_load_relaxed_u64(stampPointer) == d.stamp else { return false }
            done &+= used
            remaining &-= 1
            if remaining == 0 { return next == _ValueHeap.end && done == d.length }
            index = next
        }
        return false
    }

    /// The value `d` describes as a new array; nil when `read` fails.
    func copy(_ d: Descriptor) -> [UInt8]? {
        var ok = false
        let bytes = [UInt8](unsafeUninitializedCapacity: d.length) { buffer, initialized in
            ok = read(d, into: buffer.baseAddress!)
            initialized = d.length
        }
        return ok ? bytes : nil
    }

    // MARK: Changes (under the data lock, between begin() and end())

    /// Takes chunks off the free list for `value` and writes it into them under
    /// a fresh stamp; returns its descriptor, or nil when the free list is
    /// shorter than it claims (broken: the caller leaves the heap busy).
    func write(_ value: UnsafeRawBufferPointer, fault: () -> Void) -> Descriptor? {
        let count = _ValueHeap.chunks(for: value.count)
        guard count >= 1, count <= freeCount, let source = value.baseAddress else { return nil }
        let stamp = lastStamp &+ 1
        segment.store64(offset + F.stamp, stamp)
        let first = freeHead
        var index = first
        var done = 0
        for position in 0..<count {
            guard isChunk(index) else { return nil }
            let c = chunk(index)
            let nextFree = cshm_load_relaxed_u32((c + C.next).assumingMemoryBound(to: UInt32.self))
            let last = position == count - 1
            guard last || isChunk(nextFree) else { return nil }
            let used = min(_ValueHeap.chunkPayload, value.count - done)
            cshm_store_relaxed_u64((c + C.stamp).assumingMemoryBound(to: UInt64.self), stamp)
            cshm_fence_release()
            cshm_store_relaxed_u32((c + C.next).assumingMemoryBound(to: UInt32.self), last ? _ValueHeap.end : nextFree)
            cshm_store_relaxed_u32((c + C.used).assumingMemoryBound(to: UInt32.self), UInt32(used))
            (c + C.payload).copyMemory(from: source + done, byteCount: used)
            done += used
            segment.store(offset + F.freeHead, nextFree)
            segment.store(offset + F.freeCount, UInt32(freeCount - 1))
            if position == count / 2 { fault() }
            index = nextFree
        }
        return Descriptor(length: value.count, first: first, count: UInt32(count), stamp: stamp)
    }

    /// Puts the chunks of `d` back on the free list (stamp cleared first, so a
    /// reader still on them fails its check). False when the chain is broken
    /// (a link out of range, a stamp not the value's): the caller leaves the
    /// heap busy and the next locker rebuilds it.
    func free(_ d: Descriptor) -> Bool {
        var index = d.first
        for _ in 0..<d.count {
            guard isChunk(index) else { return false }
            let c = chunk(index)
            let stampPointer = (c + C.stamp).assumingMemoryBound(to: UInt64.self)
            guard cshm_load_relaxed_u64(stampPointer) == d.stamp else { return false }
            let next = cshm_load_relaxed_u32((c + C.next).assumingMemoryBound(to: UInt32.self))
            push(index)
            index = next
        }
        return index == _ValueHeap.end
    }

    /// Pushes one chunk on the free list, its stamp cleared first.
    func push(_ index: UInt32) {
        let c = chunk(index)
        cshm_store_relaxed_u64((c + C.stamp).assumingMemoryBound(to: UInt64.self), 0)
        cshm_fence_release()
        cshm_store_relaxed_u32((c + C.next).assumingMemoryBound(to: UInt32.self), freeHead)
        cshm_store_relaxed_u32((c + C.used).assumingMemoryBound(to: UInt32.self), 0)
        segment.store(offset + F.freeHead, index)
        segment.store(offset + F.freeCount, UInt32(truncatingIfNeeded: freeCount &+ 1))
    }

    // MARK: Rebuild and verify

    /// Marks the chunks of `d` in `claimed`; false (nothing marked) when the
    /// chain is out of range, shares a chunk with a chain already claimed, or a
    /// chunk's stamp, length or link does not match the descriptor.
    func claim(_ d: Descriptor, _ claimed: inout [Bool]) -> Bool {
        var taken: [UInt32] = []
        var index = d.first
        var done = 0
        var ok = true
        for position in 0..<Int(d.count) {
            guard isChunk(index), !claimed[Int(index)] else {
                ok = false
                break
            }
            let c = chunk(index)
            let used = Int(cshm_load_relaxed_u32((c + C.used).assumingMemoryBound(to: UInt32.self)))
            let next = cshm_load_relaxed_u32((c + C.next).assumingMemoryBound(to: UInt32.self))
            guard cshm_load_relaxed_u64((c + C.stamp).assumingMemoryBound(to: UInt64.self)) == d.stamp,
                used == min(_ValueHeap.chunkPayload, d.length - done),
                position < Int(d.count) - 1 || next == _ValueHeap.end
            else {
                ok = false
                break
            }
            claimed[Int(index)] = true
            taken.append(index)
            done += used
            index = next
        }
        if !ok { for index in taken { claimed[Int(index)] = false } }
        return ok
    }

    /// Rebuilds the free list from every chunk no live chain claims (lowest
    /// first), moves the stamp counter past every stamp in use, and records the
    /// data segment's generation. The caller holds `begin()`.
    func rebuildFreeList(claimed: [Bool], highestStamp: UInt64, dataGeneration: UInt32) {
        segment.store(offset + F.freeHead, _ValueHeap.end)
        segment.store(offset + F.freeCount, 0)
        for index in stride(from: chunkCount - 1, through: 0, by: -1) where !claimed[index] { push(UInt32(index)) }
        segment.store64(offset + F.stamp, max(lastStamp, highestStamp))
        segment.store(offset + F.generation, dataGeneration)
    }

    /// The free list's chunks in order, checked: nil and a problem when a link
    /// is out of range, a chunk is listed twice or the list is longer than the heap.
    func freeChunks() -> (chunks: [UInt32], problem: String?) {
        var seen = [Bool](repeating: false, count: chunkCount)
        var result: [UInt32] = []
        var index = freeHead
        while index != _ValueHeap.end {
            guard isChunk(index) else { return (result, "free list link \(index) out of range (\(chunkCount) chunks)") }
            guard !seen[Int(index)] else { return (result, "chunk \(index) is on the free list twice (a cycle)") }
            seen[Int(index)] = true
            result.append(index)
            index = cshm_load_relaxed_u32((chunk(index) + C.next).assumingMemoryBound(to: UInt32.self))
        }
        return (result, nil)
    }
}
