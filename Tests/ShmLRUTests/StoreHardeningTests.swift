import CShm
import Glibc
@testable import ShmLRU
import Testing

/// Regression tests for issue 11 (holes found by attacking a live store): each
/// test is named after its finding and failed on the code before the fix.
@Suite struct StoreHardeningTests {
    /// Finding 1: a forged change-log head (far beyond anything written) used to
    /// trap the pump (`Int(head - capacity - cursor)` overflowed) and kill every
    /// listening process. Now it is a gap: the listener is told it missed changes
    /// and keeps delivering the ones that follow.
    @Test func corruptChangeLogHeadDoesNotTrapListeners() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128, changeLogCapacity: 8))
            defer { try? store.detach() }
            let changes = store.listen("a")
            try store.set("a", 1)
            cshm_store_release_u64(store._store.logHeadPointer, 0xFFFF_FFFF_FFFF_F000)
            try store.set("a", 2)
            try store.set("a", 3)
            let seen = await collectUntil(changes) { describe($0) == "set:3" }
            let names = seen.map(describe)
            #expect(names.last == "set:3", "\(names)")
            #expect(names.contains("set:2"), "\(names)")
            let gap = names.firstIndex { $0.hasPrefix("missed:") }
            #expect(gap != nil && gap! < (names.firstIndex(of: "set:2") ?? 0), "\(names)")
            // The pump still runs: a listener added now sees the next change.
            let later = store.listen("a")
            try store.set("a", 4)
            #expect(await collectUntil(later) { describe($0) == "set:4" }.map(describe) == ["set:4"])
        }
    }

    /// Finding 12: cancelling listeners while the pump delivers to them used to
    /// deadlock the process (yield under the hub's lock against onTermination
    /// taking it). A helper process runs rounds of four listeners cancelled after
    /// 0–300 µs while a thread sets keys; a round that does not end is reported.
    @Test func cancellingListenersWhileChangesStreamDoesNotDeadlock() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 128))
            defer { try? store.detach() }
            let run = try runHelper(["store-listen-cancel-storm", key.description, relStress ? "2000" : "300"])
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(run.values["rounds"] != nil)
        }
    }

    /// Finding 6: a process killed inside a store `set` lost the key's previous
    /// value (its record was rewritten in place; recovery dropped the torn record),
    /// so a `get ?? 0` counter restarted. Now the new value goes to a fresh record
    /// first. A helper counts from 100 and kills itself at a point inside its
    /// k-th set; the counter must then hold 99 + k (the previous value) or 100 + k
    /// (the new one, if it was complete), never nothing, and the store verifies clean.
    @Test(arguments: ["record.torn", "set.written", "set.linked"])
    func killedInsideStoreSetKeepsThePreviousValue(point: String) throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 96))
            defer { try? store.detach() }
            for name in ["a", "b", "c"] { try store.set(name, 7) }
            try store.set("counter", 100)
            for countdown in [1, 3] {
                let before = try #require(try store.get("counter", as: Int.self))
                let run = try runHelper(["store-count-until-killed", key.description, "counter", "\(point)@\(countdown)", "10"])
                try #require(run.status == 128 + SIGKILL, "\(point)@\(countdown): not killed (status \(run.status)) \(run.errorOutput)")
                let value = try store.get("counter", as: Int.self)
                let allowed = [before + countdown - 1, before + countdown]
                #expect(value.map { allowed.contains($0) } == true, "\(point)@\(countdown): counter \(String(describing: value)), allowed \(allowed)")
                for name in ["a", "b", "c"] { #expect(try store.get(name, as: Int.self) == 7) }
                #expect(try store.verify().isClean, "\(point)@\(countdown)")
            }
        }
    }

    /// Finding 3: `ShmStore.remove(key:)` removed whatever segment the store
    /// header names as its data segment. A store header forged to name another
    /// program's segment (a plain region, an unrelated cache of the same record
    /// size, another store's data) must not make it, or `shm-lru rm`, delete it.
    @Test func removingAForgedStoreDoesNotDeleteAnotherProgramsSegment() throws {
        try withStoreKey { key in
            try withStoreKey { otherKey in
                let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
                let dataKey = store.cache.key
                let other = try ShmStore.create(key: otherKey, configuration: .init(capacity: 8, recordSize: 64))
                let plain = try ShmRegion.create(byteCount: 65536)
                let cache = try ShmLRU.create(recordSize: 64, capacity: 9, index: .shared)
                defer {
                    for victim in [plain.key, cache.key] { try? ShmRegion.remove(key: victim) }
                    try? other.detach()
                    try? store.detach()
                }
                for victim in [plain.key, cache.key, other.cache.key] {
                    store._store.store(_StoreLayout.H.lruKey, victim.unsignedValue)
                    expectError(.corrupted) { try ShmStore.remove(key: key) }
                    #if CLI
                    let run = try runProduct("shm-lru", ["rm", key.description])
                    #expect(run.status != 0, "shm-lru rm: \(run.output)")
                    #endif
                    #expect(ShmRegion.exists(key: victim), "\(victim) was removed")
                    #expect(ShmRegion.exists(key: key), "the forged store was removed (nothing may change)")
                    // And attach does not take it as its data either.
                    expectError(.corrupted) { _ = try ShmStore.attach(key: key) }
                }
                #expect(try other.get("x", as: Int.self) == nil)
                // Its own data segment: removed with it.
                store._store.store(_StoreLayout.H.lruKey, dataKey.unsignedValue)
                #if CLI
                let run = try runProduct("shm-lru", ["rm", key.description])
                #expect(run.status == 0, "\(run.errorOutput)")
                #else
                try ShmStore.remove(key: key)
                #endif
                #expect(!ShmRegion.exists(key: key) && !ShmRegion.exists(key: dataKey))
            }
        }
    }
}

/// The changes of `changes` up to and including the first for which `last`
/// holds, or those seen before `timeout` (a failure guard, not a measurement).
func collectUntil(
    _ changes: ShmStore.Changes, timeout: Duration = .seconds(60), _ last: @escaping @Sendable (ShmStore.Change) -> Bool
) async -> [ShmStore.Change] {
    final class Seen: @unchecked Sendable { var changes: [ShmStore.Change] = [] }
    let seen = Seen()
    await withTaskGroup(of: Void.self) { group in
        group.addTask {
            for await change in changes {
                seen.changes.append(change)
                if last(change) { break }
            }
        }
        group.addTask { try? await Task.sleep(for: timeout) }
        await group.next()
        group.cancelAll()
    }
    return seen.changes
}
