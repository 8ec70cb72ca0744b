#if Hummingbird
import Glibc
import ShmLRU

/// The store's configuration (every process opens or attaches the same): the
/// counter, the workers' start-up count, and the values of `/persist/:key`.
let storeConfiguration = ShmStore.Configuration(capacity: 1024, recordSize: 256)

/// Opens the store, starts the workers, waits for SIGTERM/SIGINT, stops them.
func serve(variant: String, workers: Int, loops: Int, port: Int, key: ShmKey) {
    let store: ShmStore
    do {
        store = try ShmStore.open(key: key, configuration: storeConfiguration)
        try store.set("requestTimes", 0)
        try store.set("listening", 0)
    } catch {
        fail("cannot open the store: \(error)")
    }
    // Block the signals before starting anything: sigwait receives them below.
    var signals = sigset_t()
    sigemptyset(&signals)
    sigaddset(&signals, SIGTERM)
    sigaddset(&signals, SIGINT)
    pthread_sigmask(SIG_BLOCK, &signals, nil)

    var children: [pid_t] = []
    for _ in 0..<workers {
        let argv = ["/proc/self/exe", "worker", variant, "\(port)", key.description, "\(loops)"]
        var pid: pid_t = 0
        var cArguments = argv.map { strdup($0) } + [nil]
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)  // workers get the default mask back
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        let rc = posix_spawn(&pid, "/proc/self/exe", nil, &attributes, &cArguments, environ)
        posix_spawnattr_destroy(&attributes)
        for pointer in cArguments { free(pointer) }
        guard rc == 0 else { stop(children, store, "posix_spawn failed: \(rc)") }
        children.append(pid)
    }
    // Ready when every worker listens (each adds one to "listening").
    var waited = 0
    while ((try? store.get("listening", as: Int.self)) ?? 0) < workers {
        usleep(20_000)
        waited += 1
        var status: Int32 = 0
        if waitpid(-1, &status, WNOHANG) > 0 { stop(children, store, "a worker exited before listening") }
        if waited > 3_000 { stop(children, store, "workers did not listen within 60 s") }
    }
    say("ready workers=\(workers) loops=\(loops) port=\(port) variant=\(variant)")
    var received: Int32 = 0
    sigwait(&signals, &received)
    let counter = ((try? store.get("requestTimes", as: Int.self)) ?? nil) ?? -1
    say("counter=\(counter)")
    stop(children, store, nil)
}

/// Stops every worker (SIGTERM, then SIGKILL after 2 s), removes the store, exits.
func stop(_ children: [pid_t], _ store: ShmStore, _ failure: String?) -> Never {
    for child in children { kill(child, SIGTERM) }
    var remaining = Set(children)
    for _ in 0..<200 where !remaining.isEmpty {
        for child in remaining {
            var status: Int32 = 0
            if waitpid(child, &status, WNOHANG) == child { remaining.remove(child) }
        }
        if !remaining.isEmpty { usleep(10_000) }
    }
    for child in remaining {
        kill(child, SIGKILL)
        var status: Int32 = 0
        waitpid(child, &status, 0)
    }
    try? store.remove()
    if let failure { fail(failure) }
    exit(0)
}

/// One line on stdout, unbuffered (the load script reads it while the parent runs).
func say(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
}
#endif  // Hummingbird
