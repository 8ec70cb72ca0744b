import CShm

extension ShmLRU {
    /// What a cache's header says, read by `probe(key:)`.
    public struct SegmentSummary: Sendable, Hashable {
        /// The segment's key.
        public var key: ShmKey
        /// The kernel's id (`shmid`).
        public var id: Int32
        /// The segment's size in bytes, as the kernel reports it.
        public var byteCount: Int
        /// Attachments by every process, not counting the probe's own.
        public var attachCount: Int
        /// The largest value, in bytes.
        public var recordSize: Int
        /// Records the cache holds.
        public var capacity: Int
        /// Live records (read without the lock: a snapshot).
        public var count: Int
        /// Where the hash index lives.
        public var indexKind: IndexKind
        /// When the cache was laid out.
        public var createdAt: ShmInstant
    }

    /// The owner word (`_Layout.H.owner`) and index kind of the cache in `region`
    /// (attached, read-only is enough), its header checked as `probe` checks it
    /// (with this record size): how a store tells, without attaching a handle or
    /// locking, whether a segment it would remove is its data segment.
    static func _owner(of region: ShmRegion, recordSize: Int) throws(ShmError) -> (owner: UInt64, indexKind: IndexKind) {
        let layout = try _validateHeader(of: region, expectedRecordSize: recordSize, wait: .zero, readOnlyAllowed: true)
        let segment = _Segment(base: region._attachment.base, layout: layout)
        return (cshm_load_acquire_u64(segment.u64(_Layout.H.owner)), layout.indexKind)
    }

    /// Reads the header of the segment with `key` without trusting it: attaches
    /// read-only for the length of the call, takes no lock, writes nothing, and
    /// checks every header field (magic, layout version, sizes, offsets) against
    /// the kernel's segment size as `attach` does, without waiting for a cache
    /// still being initialized. Safe on any segment, ShmLRU's or not. (The kernel
    /// notes the attachment: `ipcs -p` shows this process as the last to attach.)
    ///
    /// - Throws: `.notFound` (no segment has that key), `.permissionDenied`,
    ///   `.incompatibleSegment` (not a ShmLRU cache of this layout version:
    ///   another program's segment, or a plain `ShmRegion`), `.corrupted` (a
    ///   ShmLRU magic with a header that does not add up).
    public static func probe(key: ShmKey) throws(ShmError) -> SegmentSummary {
        let operation = "ShmLRU.probe(key: \(key))"
        let region: ShmRegion
        do {
            region = try ShmRegion._attach(key: key, readOnly: true, owners: .any)  // trusts nothing it reads
        } catch {
            throw ShmError(error.code, operation, errno: error.errno, detail: error.detail)
        }
        defer { _ = try? region.detach() }
        let layout: _Layout
        do {
            layout = try _validateHeader(of: region, expectedRecordSize: nil, wait: .zero, readOnlyAllowed: true)
        } catch {
            throw ShmError(error.code, operation, errno: error.errno, detail: error.detail)
        }
        let segment = _Segment(base: region._attachment.base, layout: layout)
        let attachments = (try? region.attachCount).map { max(0, $0 - 1) } ?? 0
        return SegmentSummary(
            key: key, id: region.id, byteCount: region.byteCount, attachCount: attachments,
            recordSize: layout.recordSize, capacity: layout.capacity, count: min(Int(segment.count), layout.capacity),
            indexKind: layout.indexKind, createdAt: ShmInstant(nanoseconds: segment.load64(_Layout.H.createdAt)))
    }
}
