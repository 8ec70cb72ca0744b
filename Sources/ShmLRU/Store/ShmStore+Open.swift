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
    /// A store whose creator died inside `create` (left half-made) is replaced
    /// even while other processes wait attached to it, with the data segment that
    /// creator made; a data segment is removed only if it is the store's own (as
    /// `remove(key:)` checks). A creator that exits or dies meanwhile makes `open`
    /// try again (for up to 10 s), to attach or create.
    ///
    /// - Throws: `.incompatibleSegment` for a live store of another configuration
    ///   (the detail names the first difference) or a live segment that is not a
    ///   store; what `create` and `attach` throw.
    public static func open(
        key: ShmKey, configuration: Configuration = Configuration(), permissions: UInt16 = 0o600, persistent: Bool = false
    ) throws(ShmError) -> ShmStore {
        let operation = "ShmStore.open(key: \(key))"
        var lastError = ShmError(.exists, operation, detail: "the segment under the key kept changing")
        // Retries (a creator that exits, dies or is replaced meanwhile) until this
        // deadline; each attach waits at most 2 s for a live creator to finish.
        let deadline = _saturatingAdd(_monotonicNanoseconds(), _openTimeoutNanoseconds)
        var pause: UInt32 = 500
        var attempt = 0
        var transientRetries = 0
        while true {
            if attempt > 0 {
                guard _monotonicNanoseconds() < deadline else { throw lastError }
                usleep(pause)
                pause = min(pause &* 2, 20_000)
            }
            attempt += 1
            do {
                return try create(key: key, configuration: configuration, permissions: permissions, persistent: persistent)
            } catch where error.code == .exists {
                // Taken: look at what is there.
            }
            guard let state = _segmentState(key) else { continue }  // gone meanwhile: create again
            if state.stale, !persistent || state.halfMade {
                _removeStale(key, id: state.id)
                continue
            }
            let store: ShmStore
            do {
                store = try _attach(key: key, wait: .seconds(2), lockTimeout: configuration.lockTimeout, hash: nil)
            } catch {
                lastError = ShmError(error.code, operation, errno: error.errno, detail: error.detail)
                // What is there now? Gone or replaced (a creator that exited removes
                // its segments), or left half-made by a creator that died: try again.
                guard let now = _segmentState(key), now.id == state.id else { continue }
                if now.stale {
                    _removeStale(key, id: now.id)
                    continue
                }
                // A creator exiting removes its data segment a moment before its
                // store segment: a few quick retries, not a store that is corrupt.
                if error.code == .corrupted || error.code == .notFound, transientRetries < 8 {
                    transientRetries += 1
                    continue
                }
                throw lastError
            }
            if let difference = _difference(store.configuration, configuration) {
                _ = try? store._storeRegion.detach()
                _ = try? store.cache.detach()
                if state.stale {
                    _removeStale(key, id: state.id)
                    continue
                }
                throw ShmError(
                    .incompatibleSegment, operation,
                    detail: "a live store with another configuration is there (\(difference)): attach it as it is with "
                        + "ShmStore.attach(key:), or open it with its configuration")
            }
            return store
        }
    }

    /// How long `open` keeps retrying against segments that change under it.
    static let _openTimeoutNanoseconds: UInt64 = 10_000_000_000

    /// The segment's id under `key`; whether it is stale (its creator is gone and
    /// nobody is attached, or its creator died inside `create`: a half-made store
    /// is never finished, whoever waits attached to it); whether it is half-made.
    static func _segmentState(_ key: ShmKey) -> (id: Int32, stale: Bool, halfMade: Bool)? {
        guard case .success(let id) = _shmget(key: key.rawValue, size: 0, flags: 0),
            case .success(let info) = _shmStat(id: id)
        else { return nil }
        let creatorAlive = info.creatorPID > 0 && _ProcessIdentity(pid: info.creatorPID, start: 0).isAlive
        if creatorAlive { return (id, false, false) }
        let halfMade = _isHalfMadeStore(key, id: id)
        return (id, info.attachCount == 0 || halfMade, halfMade)
    }

    /// True if segment `id` under `key` is a store whose creator did not finish
    /// it: no magic yet, but the version and header size `create` writes first.
    static func _isHalfMadeStore(_ key: ShmKey, id: Int32) -> Bool {
        guard let region = try? ShmRegion.attach(key: key, readOnly: true) else { return false }
        defer { _ = try? region.detach() }
        return region.id == id && _isHalfMadeStore(region)
    }

    static func _isHalfMadeStore(_ region: ShmRegion) -> Bool {
        guard region.byteCount >= _StoreLayout.headerSize else { return false }
        let base = region._attachment.base
        return cshm_load_acquire_u64(base.assumingMemoryBound(to: UInt64.self)) == 0
            && (base + _StoreLayout.H.version).loadUnaligned(as: UInt32.self) == _StoreLayout.version
            && (base + _StoreLayout.H.headerSize).loadUnaligned(as: UInt32.self) == UInt32(_StoreLayout.headerSize)
    }

    /// Removes the stale segment `id` (only that one: if another process replaced
    /// it meanwhile, the new one stays) and the data segment its header names, if
    /// that one is stale too and is this store's: claimed by this key (the check
    /// `remove(key:)` makes), or, for a store whose creator died inside `create`,
    /// made by the same (dead) creator.
    static func _removeStale(_ key: ShmKey, id: Int32) {
        guard let region = try? ShmRegion.attach(key: key) else { return }
        defer { _ = try? region.detach() }
        guard region.id == id else { return }
        _removeDataSegment(of: region, storeKey: key)
        try? region.remove()
    }

    /// Removes the data segment the store segment `region` (stale or half-made)
    /// names, if it is stale and this store's; never another program's segment.
    static func _removeDataSegment(of region: ShmRegion, storeKey key: ShmKey) {
        guard region.byteCount >= _StoreLayout.headerSize else { return }
        let base = region._attachment.base
        let finished = (base + _StoreLayout.H.magic).loadUnaligned(as: UInt64.self) == _StoreLayout.magic
        guard finished || _isHalfMadeStore(region) else { return }
        let lruKey = ShmKey((base + _StoreLayout.H.lruKey).loadUnaligned(as: UInt32.self))
        guard !lruKey.isPrivate, lruKey != key, let (dataID, dataStale, _) = _segmentState(lruKey), dataStale,
            let data = try? ShmRegion.attach(key: lruKey, readOnly: true)
        else { return }
        defer { _ = try? data.detach() }
        guard data.id == dataID else { return }
        let recordSize = Int((base + _StoreLayout.H.recordSize).loadUnaligned(as: UInt32.self))
        let ours: Bool
        if finished {
            ours = (try? _checkDataSegment(data, recordSize: recordSize, storeKey: key, "open")) != nil
        } else if case .success(let storeInfo) = _shmStat(id: region.id), case .success(let dataInfo) = _shmStat(id: dataID) {
            // Half-made: `create` writes the data key before it makes that segment,
            // so the segment is ours if the same (dead) creator made it.
            ours = storeInfo.creatorPID > 0 && storeInfo.creatorPID == dataInfo.creatorPID
        } else {
            ours = false
        }
        if ours { try? data.remove() }
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
