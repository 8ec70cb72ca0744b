import CShm
import Glibc

// Create-or-attach, so that a server restarts cleanly after it was killed.

extension ShmStore {
    /// Attaches the store under `key` if one exists with this configuration,
    /// creates it if there is none, and replaces a stale one: a store no process
    /// is attached to and whose creator is gone (killed, say), left over from an
    /// earlier run. A store that is live (attached, or its creator running) and
    /// does not match `configuration` is an error, never replaced.
    ///
    /// With `persistent: true` a stale store that matches is attached, not
    /// replaced: its values outlive its processes, as `create(persistent:)` asks.
    /// A stale store that does not match, or cannot be attached, is replaced.
    ///
    /// - Throws: `.incompatibleSegment` for a live store of another configuration
    ///   (the detail names the first difference) or a live segment that is not a
    ///   store; what `create` and `attach` throw.
    public static func open(
        key: ShmKey, configuration: Configuration = Configuration(), permissions: UInt16 = 0o600, persistent: Bool = false
    ) throws(ShmError) -> ShmStore {
        let operation = "ShmStore.open(key: \(key))"
        var lastError = ShmError(.exists, operation, detail: "the segment under the key kept changing")
        for _ in 0..<8 {
            do {
                return try create(key: key, configuration: configuration, permissions: permissions, persistent: persistent)
            } catch where error.code == .exists {
                // Taken: look at what is there.
            }
            guard let (id, stale) = _segmentState(key) else { continue }  // gone meanwhile: create again
            if stale, !persistent {
                _removeStale(key, id: id)
                continue
            }
            let store: ShmStore
            do {
                store = try _attach(key: key, wait: .seconds(2), lockTimeout: configuration.lockTimeout, hash: nil)
            } catch where error.code == .notFound {
                continue
            } catch {
                if stale {
                    _removeStale(key, id: id)
                    continue
                }
                lastError = ShmError(error.code, operation, errno: error.errno, detail: error.detail)
                throw lastError
            }
            if let difference = _difference(store.configuration, configuration) {
                _ = try? store._storeRegion.detach()
                _ = try? store.cache.detach()
                if stale {
                    _removeStale(key, id: id)
                    continue
                }
                throw ShmError(
                    .incompatibleSegment, operation,
                    detail: "a live store with another configuration is there (\(difference)): attach it as it is with "
                        + "ShmStore.attach(key:), or open it with its configuration")
            }
            return store
        }
        throw lastError
    }

    /// The segment's id under `key`, and whether it is stale (nobody attached, creator gone).
    static func _segmentState(_ key: ShmKey) -> (id: Int32, stale: Bool)? {
        guard case .success(let id) = _shmget(key: key.rawValue, size: 0, flags: 0),
            case .success(let info) = _shmStat(id: id)
        else { return nil }
        let creatorAlive = info.creatorPID > 0 && _ProcessIdentity(pid: info.creatorPID, start: 0).isAlive
        return (id, info.attachCount == 0 && !creatorAlive)
    }

    /// Removes the stale segment `id` (only that one: if another process replaced
    /// it meanwhile, the new one stays) and the data segment its header names, if
    /// that one is stale too.
    static func _removeStale(_ key: ShmKey, id: Int32) {
        guard let region = try? ShmRegion.attach(key: key) else { return }
        defer { _ = try? region.detach() }
        guard region.id == id else { return }
        if region.byteCount >= _StoreLayout.headerSize,
            (region._attachment.base + _StoreLayout.H.magic).loadUnaligned(as: UInt64.self) == _StoreLayout.magic
        {
            let lruKey = ShmKey((region._attachment.base + _StoreLayout.H.lruKey).loadUnaligned(as: UInt32.self))
            if !lruKey.isPrivate, lruKey != key, let (dataID, dataStale) = _segmentState(lruKey), dataStale,
                let data = try? ShmRegion.attach(key: lruKey)
            {
                if data.id == dataID { try? data.remove() }
                _ = try? data.detach()
            }
        }
        try? region.remove()
    }

    /// The first stored setting in which `existing` differs from `wanted`; nil if none.
    static func _difference(_ existing: Configuration, _ wanted: Configuration) -> String? {
        func differs<T: Equatable>(_ name: String, _ a: T, _ b: T) -> String? { a == b ? nil : "\(name) \(a), not \(b)" }
        func differs<T: Equatable>(_ name: String, _ a: T?, _ b: T?) -> String? {
            a == b ? nil : "\(name) \(a.map { "\($0)" } ?? "none"), not \(b.map { "\($0)" } ?? "none")"
        }
        let differences: [String?] = [
            differs("capacity", existing.capacity, wanted.capacity),
            differs("recordSize", existing.recordSize, wanted.recordSize),
            differs("memory", existing.memory, wanted.memory),
            differs("maxValueSize", existing.maxValueSize, wanted.maxValueSize),
            differs("maxAge", existing.maxAge, wanted.maxAge),
            differs("renewsAgeOnGet", existing.renewsAgeOnGet, wanted.renewsAgeOnGet),
            differs("whenFull", existing.whenFull, wanted.whenFull),
            differs("lockSlots", existing.lockSlots, wanted.lockSlots),
            differs("lockWaiters", existing.lockWaiters, wanted.lockWaiters),
            differs("changeLogCapacity", existing.changeLogCapacity, wanted.changeLogCapacity),
            differs("probeLimit", existing.probeLimit, wanted.probeLimit),
            differs("negativeTTL", existing.negativeTTL, wanted.negativeTTL),
            differs("staleIfError", existing.staleIfError, wanted.staleIfError),
        ]
        return differences.lazy.compactMap { $0 }.first
    }
}
