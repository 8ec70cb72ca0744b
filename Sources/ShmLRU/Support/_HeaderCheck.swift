import CShm
import Glibc

/// The part of attaching that the cache and the store segment share: wait, at
/// most `wait`, for a segment that its creator is still laying out (its magic is
/// published last, with release ordering), then check the magic and the layout
/// version. Each type then checks its own fields through `u32` and `u64`.
struct _HeaderCheck {
    let base: UnsafeMutableRawPointer

    /// - Parameters:
    ///   - what: the kind of segment, for messages ("ShmLRU cache", "ShmStore").
    ///   - absent: what a segment with no magic is told ("no ShmLRU cache was initialized in this segment").
    ///   - versionOffset: where the header keeps its layout version (UInt32).
    init(
        _ region: ShmRegion, magic expected: UInt64, versionOffset: Int, version: UInt32, what: String, absent: String, wait: Duration,
        _ operation: String
    ) throws(ShmError) {
        base = region._attachment.base
        let magicPointer = base.assumingMemoryBound(to: UInt64.self)
        var magic = cshm_load_acquire_u64(magicPointer)
        if magic == 0 {  // maybe still being created
            let deadline = _saturatingAdd(_monotonicNanoseconds(), UInt64(max(0, _nanoseconds(wait))))
            while magic == 0, _monotonicNanoseconds() < deadline {
                usleep(1_000)
                magic = cshm_load_acquire_u64(magicPointer)
            }
        }
        guard magic == expected else {
            throw ShmError(
                .incompatibleSegment, operation,
                detail: magic == 0 ? absent : "not a \(what) segment (magic 0x\(String(magic, radix: 16)))")
        }
        let found = cshm_load_relaxed_u32((base + versionOffset).assumingMemoryBound(to: UInt32.self))
        guard found == version else {
            throw ShmError(.incompatibleSegment, operation, detail: "\(what) layout version \(found); this library reads \(version)")
        }
    }

    /// A header word, read raw: check it before use.
    func u32(_ offset: Int) -> UInt32 { cshm_load_relaxed_u32((base + offset).assumingMemoryBound(to: UInt32.self)) }
    func u64(_ offset: Int) -> UInt64 { cshm_load_relaxed_u64((base + offset).assumingMemoryBound(to: UInt64.self)) }
}
