#if CLI
import ArgumentParser
import ShmLRU

// create, rm: a cache's segment comes and goes (rm: a store's two segments too).

/// The store whose data segment has this key, if any (read-only probes).
func storeOwning(dataKey: ShmKey) -> ShmKey? {
    for info in ShmRegion.list() where !info.key.isPrivate && info.key != dataKey {
        if let store = try? ShmStore.probe(key: info.key), store.dataKey == dataKey { return store.key }
    }
    return nil
}

struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create an empty cache that outlives this command.",
        discussion: "Fails (exit 5) if a segment already has the key. Remove it later with `shm-lru rm KEY`.")

    @Argument(help: "The new segment's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Option(name: .customLong("record-size"), help: ArgumentHelp("The largest value, in bytes.", valueName: "bytes"))
    var recordSize: Int

    @Option(help: ArgumentHelp("How many records the cache holds.", valueName: "n"))
    var capacity: Int

    @Option(help: ArgumentHelp("Where the hash map lives: shared (in the segment) or processLocal.", valueName: "kind"))
    var index: String = "shared"

    @Option(help: ArgumentHelp("The eviction policy: lru, sieve, s3fifo or tinylfu.", valueName: "name"))
    var policy: String = "lru"

    @Option(help: ArgumentHelp("The segment's permission bits, in octal.", valueName: "octal"))
    var mode: String = "600"

    func validate() throws {
        guard ShmLRU.IndexKind(rawValue: index) != nil else { throw ValidationError("--index must be shared or processLocal") }
        guard ShmLRU.EvictionPolicy(rawValue: policy) != nil else { throw ValidationError("--policy must be lru, sieve, s3fifo or tinylfu") }
        guard let bits = UInt16(mode, radix: 8), bits <= 0o777 else { throw ValidationError("--mode must be octal, 0 to 777") }
        guard recordSize >= 1 else { throw ValidationError("--record-size must be 1 or more") }
        guard capacity >= 1 else { throw ValidationError("--capacity must be 1 or more") }
    }

    func run() throws {
        try reporting {
            let cache: ShmLRU
            do throws(ShmError) {
                cache = try ShmLRU.create(
                    key: key, recordSize: recordSize, capacity: capacity, index: ShmLRU.IndexKind(rawValue: index)!,
                    permissions: UInt16(mode, radix: 8)!, persistent: true,
                    options: ShmLRU.Options(policy: ShmLRU.EvictionPolicy(rawValue: policy)!))
            } catch {
                throw describe(error, key: key)
            }
            print("created \(key): \(cache.capacity) records of \(cache.recordSize) bytes, \(cache.region.byteCount) bytes in all")
        }
    }
}

struct RemoveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove a cache's segment, or a store's two segments.",
        discussion: """
            Marks the segment for removal (IPC_RMID): its key is free at once, and its \
            memory goes when the last attached process detaches. For a store, removes its \
            store segment and its data segment. Refuses a segment that is neither a cache \
            nor a store unless --force is given, and a store's data segment (remove the \
            store) unless --force is given.
            """)

    @Argument(help: "The segment's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Flag(help: "Remove the segment even if it is not a ShmLRU cache or store, or is a store's data segment.")
    var force = false

    func run() throws {
        try reporting {
            if let store = try? ShmStore.probe(key: key) {
                do throws(ShmError) { try ShmStore.remove(key: key) } catch { throw describe(error, key: key) }
                print(
                    "removed store \(key) and its data segment \(store.dataKey)"
                        + (store.attachCount > 0
                            ? " (\(store.attachCount) process(es) still attached: the memory goes when they detach)" : ""))
                return
            }
            if !force, let owner = storeOwning(dataKey: key) {
                throw ToolFailure(
                    "segment \(key) is the data segment of store \(owner); remove the store (`shm-lru rm \(owner)`) or use --force",
                    exitCode: Exit.failure)
            }
            var attached = 0
            do throws(ShmError) {
                attached = try ShmLRU.probe(key: key).attachCount
            } catch {
                let foreign = error.code == .incompatibleSegment || error.code == .corrupted
                guard foreign else { throw describe(error, key: key) }
                // A ShmStore: its store segment and its data segment, the latter only
                // if it really is this store's (ShmStore.remove(key:) checks).
                do throws(ShmError) {
                    try ShmStore.remove(key: key)
                    print("removed store \(key) and its data segment")
                    return
                } catch let storeError where storeError.code == .incompatibleSegment {
                    // not a store either
                } catch {
                    guard force else {
                        throw ToolFailure(
                            describe(error, key: key).message + "; not removed (use --force to remove the store segment alone)",
                            exitCode: Exit.notShmLRU)
                    }
                }
                guard force else {
                    throw ToolFailure(
                        describe(error, key: key).message + "; not removed (use --force)", exitCode: Exit.notShmLRU)
                }
                attached = ShmRegion.list().first { $0.key == key }?.attachCount ?? 0
            }
            do throws(ShmError) { try ShmRegion.remove(key: key) } catch { throw describe(error, key: key) }
            print("removed \(key)" + (attached > 0 ? " (\(attached) process(es) still attached: the memory goes when they detach)" : ""))
        }
    }
}
#endif  // CLI
