extension ShmRegion {
    /// One shared-memory segment of this machine, as the kernel lists it
    /// (`/proc/sysvipc/shm`, what `ipcs -m` prints). Nothing here comes from the
    /// segment's bytes: see `ShmLRU.probe(key:)` for what a cache's header says.
    public struct SegmentInfo: Sendable, Hashable {
        /// The segment's key; `isPrivate` for an `IPC_PRIVATE` segment or one
        /// already marked for removal (neither can be found by key any more).
        public var key: ShmKey
        /// The kernel's id (`shmid`).
        public var id: Int32
        /// The segment's size in bytes.
        public var byteCount: Int
        /// The mode bits (0o600 …).
        public var permissions: UInt16
        /// Attachments, from every process.
        public var attachCount: Int
        /// The process that created the segment (it may have exited).
        public var creatorPID: Int32
        /// The last process that attached or detached.
        public var lastPID: Int32
        /// The owner's user id.
        public var ownerUID: UInt32
    }

    /// Every SysV shared-memory segment of this machine that the kernel lists to
    /// this process, in key order; empty when `/proc/sysvipc/shm` is unreadable.
    /// Reads no segment (see `ShmLRU.probe(key:)` for that).
    public static func list() -> [SegmentInfo] {
        _listSegments()
            .map { line in
                let status = line.status
                return SegmentInfo(
                    key: ShmKey(rawValue: status.key), id: line.id,
                    byteCount: status.size > UInt64(Int.max) ? .max : Int(status.size),
                    permissions: UInt16(status.mode & 0o777),
                    attachCount: status.attachCount > UInt64(Int.max) ? .max : Int(status.attachCount),
                    creatorPID: status.creatorPID, lastPID: status.lastPID, ownerUID: status.ownerUID)
            }
            .sorted { ($0.key, $0.id) < ($1.key, $1.id) }
    }
}
