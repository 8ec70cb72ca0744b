import Glibc
import Synchronization
@testable import ShmLRU
import Testing

@Suite struct StoreListenTests {
    /// A helper sets the key 1, 1 (unchanged), 2, 3, 4, 5 and removes it; the
    /// listener here sees every one of those changes, in order, with its value.
    @Test func listenerSeesEveryChangeFromAnotherProcessInOrder() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 128))
            let changes = store.listen("k")
            let second = store.listen("k")
            let unrelated = store.listen("other")
            let run = try runHelper(["store-sequence", key.description, "k", "5"])
            #expect(run.status == 0, "\(run.errorOutput)")
            try store.set("other", 99)  // a marker: everything before it reached the log first
            let expected = ["set:1", "set:1", "set:2", "set:3", "set:4", "set:5", "removed"]
            let seen = await collect(changes, count: expected.count)
            #expect(seen.map(describe) == expected)
            #expect(seen.allSatisfy { $0.key == "k" })
            #expect(zip(seen, seen.dropFirst()).allSatisfy { $0.sequence < $1.sequence })
            #expect(await collect(second, count: expected.count).map(describe) == expected)
            // The other key's listener saw only its own key.
            #expect(await collect(unrelated, count: 1).map(describe) == ["set:99"])
        }
    }

    /// The other direction: a listener in a helper process sees sets and removes made here.
    @Test func listenerInAnotherProcessSeesChangesMadeHere() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 128))
            let listener = try spawnHelper(["store-listen", key.description, "k", "4"])
            #expect(listener.readLine() == "ready=1")
            try store.set("k", 10)
            try store.set("unrelated", 1)
            try store.set("k", 10)
            try store.set("k", 0)
            try store.remove("k")
            let run = listener.wait()
            #expect(run.status == 0, "\(run.errorOutput)")
            let lines = run.output.split(separator: "\n").filter { $0.hasPrefix("change=") }
            #expect(lines == ["change=set:10", "change=set:10", "change=set:0", "change=removed:-"])
        }
    }

    @Test func listeningEndsWhenTheTaskIsCancelled() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            let changes = store.listen("k")
            let task = Task {
                var count = 0
                for await _ in changes { count += 1 }
                return count  // reached only when the sequence ends
            }
            try store.set("k", 1)
            #expect(await eventually { store._hub.state.withLock { $0.listeners.count } == 1 })
            task.cancel()
            _ = await task.value
            #expect(await eventually { store._hub.state.withLock { $0.listeners.count } == 0 })
        }
    }

    @Test func detachEndsEveryListener() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            let changes = store.listen("k")
            try store.set("k", 1)
            try store.detach()
            var seen: [String] = []
            for await change in changes { seen.append(describe(change)) }  // ends: no hang
            #expect(seen.count <= 1)
        }
    }

    /// A listener that falls more than the log's capacity behind is told how many
    /// changes it missed, then gets the ones still in the log.
    @Test func aReaderThatFallsBehindIsToldWhatItMissed() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, changeLogCapacity: 4))
            let start = store._store.logHead
            for value in 1...10 { try store.set("k", value) }
            var buffer = [UInt8](repeating: 0, count: 64)
            let (changes, missed) = store._hub.read(from: start, to: store._store.logHead, buffer: &buffer)
            #expect(missed == 6)
            #expect(changes.map(describe) == ["set:7", "set:8", "set:9", "set:10"])
        }
    }

    @Test func changesOfAllKeys() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 2, recordSize: 64))
            let all = store.listenAll()
            try store.set("a", 1)
            try store.set("b", 2)
            try store.set("c", 3)  // evicts a
            try store.remove("b")
            let seen = await collect(all, count: 5)
            #expect(seen.map { "\($0.key) \(describe($0))" } == ["a set:1", "b set:2", "a evicted", "c set:3", "b removed"])
        }
    }
}
