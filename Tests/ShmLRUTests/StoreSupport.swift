import Glibc
@testable import ShmLRU
import Testing

/// Runs `body` with a fresh key, then removes the store under it (its store
/// segment and its data segment), also when `body` throws or an expectation fails.
func withStoreKey<R>(_ body: (ShmKey) throws -> R) throws -> R {
    let key = uniqueKey()
    defer { removeStore(key) }
    return try body(key)
}

func withStoreKey<R>(_ body: (ShmKey) async throws -> R) async throws -> R {
    let key = uniqueKey()
    defer { removeStore(key) }
    return try await body(key)
}

func removeStore(_ key: ShmKey) {
    try? ShmStore.remove(key: key)
    try? ShmRegion.remove(key: key)
}

/// The first `count` changes of `changes`, or fewer if they do not all arrive
/// within `timeout` (a failure guard, not a measurement).
func collect(_ changes: ShmStore.Changes, count: Int, timeout: Duration = .seconds(60)) async -> [ShmStore.Change] {
    await withTaskGroup(of: [ShmStore.Change]?.self) { group in
        group.addTask {
            var seen: [ShmStore.Change] = []
            for await change in changes {
                seen.append(change)
                if seen.count == count { break }
            }
            return seen
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first ?? []
    }
}

/// Polls `condition` every few milliseconds until it holds; false if it still
/// does not after `timeout` (a failure guard: tests assert the condition, never the time).
func eventually(timeout: Duration = .seconds(60), _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        usleep(5_000)
    }
    return try condition()
}

/// A summary of a change for comparisons: "set:3", "removed", "expired:name"…
func describe(_ change: ShmStore.Change) -> String {
    switch change.kind {
    case .set: "set:" + ((try? change.value(as: Int.self)).flatMap { $0 }.map { "\($0)" } ?? String(decoding: change.bytes ?? [], as: UTF8.self))
    case .removed: "removed"
    case .expired: "expired"
    case .evicted: "evicted"
    case .missed(let count): "missed:\(count)"
    }
}

/// Expects `body` to throw a `ShmError` with `code`.
func expectError(
    _ code: ShmError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record("expected \(code); nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as ShmError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected ShmError \(code), got \(error)", sourceLocation: sourceLocation)
    }
}

func expectError(
    _ code: ShmError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
) async {
    do {
        try await body()
        Issue.record("expected \(code); nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as ShmError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected ShmError \(code), got \(error)", sourceLocation: sourceLocation)
    }
}

/// `eventually` for async tests: sleeps without holding a cooperative thread.
func eventually(timeout: Duration = .seconds(60), _ condition: () throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return try condition()
}
