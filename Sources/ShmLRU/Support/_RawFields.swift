import CShm

/// Word access at byte offsets from a segment's base, for the types that own a
/// layout (`_Segment` for the cache, `_StoreSegment` for the store's companion
/// segment). The offsets come from their layouts; values read come back raw.
protocol _RawFields {
    var base: UnsafeMutableRawPointer { get }
}

extension _RawFields {
    @inline(__always) func u32(_ offset: Int) -> UnsafeMutablePointer<UInt32> {
        (base + offset).assumingMemoryBound(to: UInt32.self)
    }
    @inline(__always) func u64(_ offset: Int) -> UnsafeMutablePointer<UInt64> {
        (base + offset).assumingMemoryBound(to: UInt64.self)
    }
    @inline(__always) func load(_ offset: Int) -> UInt32 { cshm_load_relaxed_u32(u32(offset)) }
    @inline(__always) func store(_ offset: Int, _ value: UInt32) { cshm_store_relaxed_u32(u32(offset), value) }
    @inline(__always) func load64(_ offset: Int) -> UInt64 { cshm_load_relaxed_u64(u64(offset)) }
    @inline(__always) func store64(_ offset: Int, _ value: UInt64) { cshm_store_relaxed_u64(u64(offset), value) }
}
