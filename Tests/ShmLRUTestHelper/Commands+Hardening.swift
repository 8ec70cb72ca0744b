import CShm
import Dispatch
import Glibc
import ShmLRU

/// Commands for the hardening tests (issue 11): listener cancellation under load,
/// reads while a writer is stopped, kills inside a store set.
let hardeningCommands: [String: HelperCommand] = [
    "store-listen-cancel-storm": storeListenCancelStorm,
    "store-count-until-killed": storeCountUntilKilled,
    "detach-race": detachRace,
    "store-listen-detach-all": storeListenDetachAll,
]

private final class Ended: @unchecked Sendable { var value = false }

/// store-listen-detach-all KEY  → ended=1 afterwards=detached
///
/// Listens to a store, sees one change, then `ShmRegion.detachAll()`: the
/// listener's sequence must end (within 30 s) and the store throw `.detached`.
func storeListenDetachAll(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let changes = store.listen("k")
    let done = DispatchSemaphore(value: 0)
    let seen = DispatchSemaphore(value: 0)
    let ended = Ended()
    Task.detached {
        var first = true
        for await _ in changes where first {
            first = false
            seen.signal()
        }
        ended.value = true
        done.signal()
    }
    try store.set("k", 1)
    guard seen.wait(timeout: .now() + .seconds(30)) == .success else { throw HelperFailure(message: "no change arrived") }
    ShmRegion.detachAll()
    guard done.wait(timeout: .now() + .seconds(30)) == .success else { throw HelperFailure(message: "the listener did not end") }
    emit("ended", ended.value ? 1 : 0)
    do {
        try store.set("k", 2)
        emit("afterwards", "set")
    } catch {
        emit("afterwards", error.code == .detached ? "detached" : "\(error)")
    }
}

/// store-count-until-killed KEY NAME SPEC N
///
/// Arms SPEC (`point@n`), then N times: `set(NAME, get(NAME) ?? 0 + 1)`, the
/// read-modify-write a shared counter makes. Prints `count=…` after each set.
func storeCountUntilKilled(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    let name = try argument(arguments, 1, "NAME")
    let spec = try argument(arguments, 2, "SPEC")
    if spec != "-" { setenv("SHMLRU_FAULT_INJECTION", spec, 1) }
    let rounds: Int = try intArgument(arguments, 3, "N")
    let store = try ShmStore.attach(key: key)
    for _ in 0..<rounds {
        let value = (try store.get(name, as: Int.self) ?? 0) + 1
        try store.set(name, value)
        emit("count", value)
    }
}

/// A flag for the racing threads (process-local).
private final class RaceFlag: @unchecked Sendable {
    let value = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    init() { value.initialize(to: 0) }
    deinit { value.deallocate() }  // (LeakSanitizer failed the helper under `make sanitize` without it)
}

/// detach-race KEY KIND ROUNDS  (KIND: exact, interval, store)
///
/// Each round attaches a handle to the cache (or store) under KEY, starts two
/// threads that set and get through it until it reports `.detached`, detaches it
/// from the main thread after 0–500 µs, and joins them. Any other error fails;
/// reading unmapped memory would kill the process (SIGSEGV).
func detachRace(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    let kind = try argument(arguments, 1, "KIND")
    let rounds: Int = try intArgument(arguments, 2, "ROUNDS")
    var detachedSeen = 0
    for round in 0..<rounds {
        let failure = RaceFlag()
        let stopped = RaceFlag()
        var threads: [pthread_t] = []
        let detach: () throws -> Void
        /// Two threads running `operation(step)` with growing steps until it reports `.detached`.
        func spawnUntilDetached(_ operation: @escaping @Sendable (Int) throws -> Void) {
            for thread in 0..<2 {
                threads.append(Thread_spawn {
                    var step = thread * 1000
                    while true {
                        do { try operation(step) } catch let error as ShmError where error.code == .detached {
                            cshm_fetch_add_u32(stopped.value, 1)
                            return
                        } catch {
                            FileHandleLite.standardError.write("round \(round): \(error)\n")
                            cshm_store_release_u32(failure.value, 1)
                            return
                        }
                        step &+= 1
                    }
                })
            }
        }
        switch kind {
        case "exact", "interval":
            let options = ShmLRU.Options(promotion: kind == "exact" ? .onEveryRead : .atMostEvery(.milliseconds(1)))
            let cache = try ShmLRU.attach(key: key, options: options)
            spawnUntilDetached { step in
                let hash = UInt32(truncatingIfNeeded: step)
                if hash % 3 == 0 { try cache.set(hash % 64, "value \(hash)") } else { _ = try cache.bytes(hash % 64) }
            }
            detach = { _ = try cache.detach() }
        case "store":
            let store = try ShmStore.attach(key: key)
            _ = store.listenAll()
            spawnUntilDetached { step in
                if step % 3 == 0 { try store.set("k\(step % 32)", step) } else { _ = try store.get("k\(step % 32)", as: Int.self) }
            }
            detach = { try store.detach() }
        default:
            throw HelperFailure(message: "bad KIND \(kind)")
        }
        usleep(UInt32.random(in: 0...500))
        try detach()
        for thread in threads { pthread_join(thread, nil) }
        if cshm_load_acquire_u32(failure.value) != 0 { throw HelperFailure(message: "round \(round): an operation failed otherwise") }
        detachedSeen += Int(cshm_load_acquire_u32(stopped.value))
    }
    emit("rounds", rounds)
    emit("detachedSeen", detachedSeen)
}

private final class StormFlag: @unchecked Sendable {
    let running = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    init() { running.initialize(to: 1) }
    deinit { running.deallocate() }
}

/// store-listen-cancel-storm KEY ROUNDS  → rounds=ROUNDS
///
/// Each round: a thread sets keys in a loop while four tasks iterate `listen`,
/// each cancelled after 0–300 µs. A round that does not end within 30 s is a
/// deadlock (the pump yielding under the hub's lock while a cancelled listener's
/// onTermination waits for it): the helper reports it and exits 1.
func storeListenCancelStorm(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let rounds: Int = try intArgument(arguments, 1, "ROUNDS")
    let flag = StormFlag()
    let setter = Thread_spawn {
        var value = 0
        while cshm_load_acquire_u32(flag.running) != 0 {
            try? store.set("k\(value % 4)", value)
            value += 1
        }
    }
    for round in 0..<rounds {
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            await withTaskGroup(of: Void.self) { group in
                for listener in 0..<4 {
                    let changes = listener % 2 == 0 ? store.listenAll() : store.listen("k\(listener)")
                    let task = Task { for await _ in changes {} }
                    group.addTask {
                        let delay = UInt32.random(in: 0...300)
                        if delay > 0 { usleep(delay) }
                        task.cancel()
                        await task.value
                    }
                }
            }
            done.signal()
        }
        guard done.wait(timeout: .now() + .seconds(30)) == .success else {
            FileHandleLite.standardError.write("helper store-listen-cancel-storm: round \(round) did not end in 30 s (deadlock)\n")
            _exit(1)
        }
    }
    cshm_store_release_u32(flag.running, 0)
    pthread_join(setter, nil)
    emit("rounds", rounds)
}

/// Starts a joinable thread running `body`.
func Thread_spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    final class Box { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    pthread_create(&thread, nil, { raw in
        let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
        box.body()
        return nil
    }, box)
    return thread
}
