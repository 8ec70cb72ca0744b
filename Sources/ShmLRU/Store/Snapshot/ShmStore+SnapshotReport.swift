// What a snapshot and a restore tell their caller, and the error codes of a
// snapshot file that cannot be used (ShmStore+Snapshot.swift has the API).

extension ShmError.Code {
    /// A snapshot file is damaged (truncated, a checksum that does not match, a
    /// length out of range): the error's detail names the byte offset.
    public static let snapshotDamaged = ShmError.Code(rawValue: "snapshotDamaged")
    /// A snapshot file was written by a newer format version than this library reads.
    public static let snapshotVersionTooNew = ShmError.Code(rawValue: "snapshotVersionTooNew")
}

extension ShmStore {
    /// What `snapshot(to:)` wrote.
    public struct SnapshotReport: Sendable, Hashable {
        /// The snapshot file (replaced whole, or left as it was when the snapshot failed).
        public var path: String
        /// Entries written.
        public var entries: Int
        /// The file's size in bytes.
        public var bytes: Int
        /// The entries' key and value bytes (without the format's overhead).
        public var payloadBytes: Int
        /// Entries met expired and left out.
        public var skippedExpired: Int
        /// Records met while a writer changed them: copied again (after a few
        /// tries, under the data lock for that record alone).
        public var retried: Int
        /// Records freed or reused between the snapshot's listing and its copy, whose
        /// entry was found again under its hash (an update writes a new record).
        public var followed: Int
        /// The time the snapshot took, file written and synced.
        public var duration: Duration
    }

    /// Where a snapshot file's damage starts.
    public struct SnapshotDamage: Sendable, Hashable, CustomStringConvertible {
        /// The byte offset of the first bad part (a block's or the trailer's start, or a field).
        public var offset: Int
        /// What is wrong there.
        public var reason: String
        /// Entries of the file before the damage (all checked whole).
        public var entriesBefore: Int

        /// "at offset N: reason (M entries before it)".
        public var description: String { "at offset \(offset): \(reason) (\(entriesBefore) entries before it)" }
    }

    /// What `restore(from:)` did.
    public struct RestoreReport: Sendable, Hashable {
        /// The snapshot file read.
        public var path: String
        /// Entries read from the file (those before the damage when it is damaged).
        public var entriesInSnapshot: Int
        /// Entries written into the store.
        public var restored: Int
        /// Entries whose time to live ran out since the snapshot: left out.
        public var skippedExpired: Int
        /// Entries left out because the store had no room for them (fewer records, a
        /// smaller value heap, a key or value larger than this store takes, every probe
        /// hash taken): the least preferred ones, as the snapshot orders them.
        public var skippedNoRoom: Int
        /// The first damage met (nil: the whole file checked out); the entries before it were restored.
        public var damage: SnapshotDamage?
        /// The time the restore took.
        public var duration: Duration
    }

    /// What a snapshot file holds, checked whole (`ShmStore.inspectSnapshot(at:)`).
    public struct SnapshotSummary: Sendable, Hashable {
        /// The configuration of the store it was taken from (`lockTimeout` is the default).
        public var configuration: Configuration
        /// Entries in the file (before the damage when damaged).
        public var entries: Int
        /// The file's size in bytes.
        public var bytes: Int
        /// When it was written, nanoseconds since 1970 (CLOCK_REALTIME).
        public var writtenAtNanoseconds: UInt64
        /// The first damage met; nil when every checksum and count matched.
        public var damage: SnapshotDamage?
    }
}
