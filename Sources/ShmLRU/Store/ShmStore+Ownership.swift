import CShm

// Which data segment is a store's own.
//
// The store segment names its data segment by key; a store segment is just bytes
// anyone with write access (or a key collision) can forge. Before a store uses or
// removes the segment it names, it checks that segment is an ShmLRU cache with a
// shared index, of the store's record size, whose header says it belongs to the
// store with this key (`_Layout.H.owner`, written when the store creates it).
//
// Why a claim in the data segment and not the creators' PIDs or uids: the store
// and its data segment are created by one process, but PIDs are reused, and a
// forger with the same uid (the common case: the same service account) passes a
// uid check. A claim can only be written by someone who can write the data
// segment itself, who can destroy it anyway; a forged store segment cannot make
// another program's segment, or another store's data, look like its own.

extension ShmStore {
    /// Marks a data segment just created for the store with key `storeKey`.
    static func _claim(_ cache: ShmLRU, for storeKey: ShmKey) {
        cache._lockFreeView.claimOwnership(_ownerWord(storeKey))
    }

    static func _ownerWord(_ storeKey: ShmKey) -> UInt64 { _Layout.ownerTagStore | UInt64(storeKey.unsignedValue) }

    /// Throws `.corrupted` unless the attached `cache` is the data segment of the store with key `storeKey`.
    static func _checkOwnership(_ cache: ShmLRU, storeKey: ShmKey, _ operation: String) throws(ShmError) {
        guard cache.indexKind == .shared else {
            throw ShmError(.corrupted, operation, detail: "its data segment \(cache.key) is not a shared-index cache: not this store's")
        }
        let owner = cache._lockFreeView.owner
        guard owner == _ownerWord(storeKey) else {
            throw ShmError(
                .corrupted, operation,
                detail: "the segment its header names as data segment (\(cache.key)) does not belong to this store"
                    + (owner >> 32 == _Layout.ownerTagStore >> 32 ? " (it is the data of store \(ShmKey(UInt32(truncatingIfNeeded: owner))))" : ""))
        }
    }

    /// Checks, without writing or locking, that the segment `data` (attached
    /// read-only) is the data segment of the store with key `storeKey` and record
    /// size `recordSize`; throws `.corrupted` (naming what it is) otherwise.
    static func _checkDataSegment(_ data: ShmRegion, recordSize: Int, storeKey: ShmKey, _ operation: String) throws(ShmError) {
        let found: (owner: UInt64, indexKind: ShmLRU.IndexKind)
        do {
            found = try ShmLRU._owner(of: data, recordSize: recordSize)
        } catch {
            throw ShmError(
                .corrupted, operation, detail: "the segment its header names as data segment (\(data.key)) is not its data: \(error)")
        }
        guard found.indexKind == .shared, found.owner == _ownerWord(storeKey) else {
            throw ShmError(
                .corrupted, operation, detail: "the segment its header names as data segment (\(data.key)) does not belong to this store")
        }
    }
}
