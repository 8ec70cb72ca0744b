import CShm
import Glibc

/// One word of a segment header, declared once in its layout's field table
/// (`_Layout.fields` for the cache, `_StoreLayout.fields` for the store segment):
/// create writes the table (`_RawFields.write`), attach compares the segment
/// with it (`_HeaderCheck.firstMismatch`, which names the field), the cache's
/// corruption harness patches its words. The magic is not in a table: it is
/// published last, with release ordering, and checked first (`_HeaderCheck`).
struct _HeaderField<Source>: Sendable {
    let name: String
    /// Bytes from the segment's start.
    let offset: Int
    /// 4 or 8.
    let size: Int
    /// The word a header describing `source` holds.
    let value: @Sendable (Source) -> UInt64

    static func u32(_ name: String, _ offset: Int, _ value: @escaping @Sendable (Source) -> UInt64) -> Self {
        Self(name: name, offset: offset, size: 4, value: value)
    }
    static func u64(_ name: String, _ offset: Int, _ value: @escaping @Sendable (Source) -> UInt64) -> Self {
        Self(name: name, offset: offset, size: 8, value: value)
    }

    /// The 32-bit words the field covers.
    var words: [Int] { size == 8 ? [offset, offset + 4] : [offset] }
}

extension _RawFields {
    /// Writes every field of `fields` as a header describing `source` (relaxed:
    /// the caller publishes the header with its magic).
    func write<Source>(_ fields: [_HeaderField<Source>], _ source: Source) {
        for field in fields {
            let value = field.value(source)
            if field.size == 8 { store64(field.offset, value) } else { store(field.offset, UInt32(truncatingIfNeeded: value)) }
        }
    }
}

/// The part of attaching that the cache and the store segment share: wait, at
/// most `wait`, for a segment that its creator is still laying out (its magic is
/// published last, with release ordering), then check the magic and the layout
/// version. Each type then reads the inputs of its layout through `u32` and
/// `u64`, and compares the rest with its field table (`firstMismatch`).
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

    /// A field's word as the segment holds it (raw: check it before use).
    func read<Source>(_ field: _HeaderField<Source>) -> UInt64 {
        field.size == 8 ? u64(field.offset) : UInt64(u32(field.offset))
    }

    /// The first of `fields` whose word differs from the one a header describing
    /// `expected` holds, as "name found, expected value"; nil when every one matches.
    func firstMismatch<Source>(_ fields: [_HeaderField<Source>], _ expected: Source) -> String? {
        for field in fields {
            let found = read(field)
            let wanted = field.value(expected)
            if found != wanted { return "\(field.name) \(found), expected \(wanted)" }
        }
        return nil
    }
}
