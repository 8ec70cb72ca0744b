// Holders that cannot read their own start time (issue 24, items 1 and 8): a
// process at its file-descriptor limit, and one whose /proc is an empty tmpfs
// (its own mount namespace). Neither must be taken for dead while it runs.
import Glibc
import ShmLRU
import ShmLRUTestSupport

let livenessCommands: [String: HelperCommand] = [
    "lru-hold-lock-blind": lruHoldLockBlind,
    "identity-at-fd-limit": identityAtFdLimit,
]

/// Lowers the soft descriptor limit to `limit` and opens /dev/null until no
/// descriptor is left; returns the descriptors opened (to close later).
func exhaustDescriptors(limit: Int) throws -> [Int32] {
    var rl = rlimit()
    guard getrlimit(RLIMIT_NOFILE_, &rl) == 0 else { throw HelperFailure(message: "getrlimit: \(errno)") }
    rl.rlim_cur = rlim_t(limit)
    guard setrlimit(RLIMIT_NOFILE_, &rl) == 0 else { throw HelperFailure(message: "setrlimit: \(errno)") }
    var opened: [Int32] = []
    opened.reserveCapacity(limit)
    while true {
        let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            guard errno == EMFILE else { throw HelperFailure(message: "open: \(errno)") }
            return opened
        }
        opened.append(fd)
    }
}

private let RLIMIT_NOFILE_ = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)

/// Gives this process a mount namespace of its own with an empty tmpfs over
/// /proc (needs root). Must run before any other thread starts: a namespace
/// change applies to the calling thread only.
func hideProc() throws {
    typealias Unshare = @convention(c) (Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "unshare") else {  // RTLD_DEFAULT
        throw HelperFailure(message: "no unshare")
    }
    let unshare = unsafeBitCast(symbol, to: Unshare.self)
    let cloneNewNS: Int32 = 0x0002_0000
    guard unshare(cloneNewNS) == 0 else { throw HelperFailure(message: "unshare(CLONE_NEWNS): errno \(errno)") }
    guard mount("none", "/", nil, UInt(MS_REC | MS_PRIVATE), nil) == 0 else {
        throw HelperFailure(message: "mount --make-rprivate /: errno \(errno)")
    }
    guard mount("none", "/proc", "tmpfs", 0, nil) == 0 else { throw HelperFailure(message: "mount tmpfs /proc: errno \(errno)") }
}

/// True if this process can read its own /proc/self/stat now.
func procReadable() -> Bool {
    let fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    var byte: UInt8 = 0
    defer { close(fd) }
    return read(fd, &byte, 1) == 1
}

/// lru-hold-lock-blind KEY HASH fd-limit|no-proc
///
/// Makes its own start time unreadable (fd-limit: 24 descriptors, all in use;
/// no-proc: an empty /proc), then attaches the cache and holds its lock inside
/// withValue(HASH) for ever. Prints procReadable=0|1 and ready=1 while holding.
func lruHoldLockBlind(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    let hash: UInt32 = try intArgument(arguments, 1, "HASH", as: UInt32.self)
    switch try argument(arguments, 2, "MODE") {
    case "fd-limit": _ = try exhaustDescriptors(limit: 24)  // held until killed
    case "no-proc": try hideProc()
    case let mode: throw HelperFailure(message: "bad MODE \(mode)")
    }
    let cache = try ShmLRU.attach(key: key)
    let readable = procReadable()
    _ = try cache.withValue(hash) { value in
        emit("value", String(decoding: value, as: UTF8.self))
        emit("procReadable", readable ? 1 : 0)
        emit("ready", 1)
        waitForever()
    }
    throw HelperFailure(message: "hash \(hash) not found")
}

/// identity-at-fd-limit → first=… (start time read with no descriptor left),
/// after=… (read again once descriptors are free), actual=… (/proc/self/stat).
func identityAtFdLimit(_ arguments: [String]) throws {
    let opened = try exhaustDescriptors(limit: 24)
    let first = _ProcessIdentity.current.start
    for fd in opened { close(fd) }
    let after = _ProcessIdentity.current.start
    emit("first", first)
    emit("after", after)
    emit("actual", procStartTicks(getpid()).map { String($0) } ?? "none")
}

// MARK: open against dead and exiting creators (issue 24, items 2-5)

let openCommands: [String: HelperCommand] = [
    "store-create-killed": storeCreateKilled,
    "store-create-exit": storeCreateExit,
    "store-open-once": storeOpenOnce,
]

/// store-create-killed KEY → killed (SIGKILL) inside ShmStore.create, its data
/// segment made and claimed, the store header unfinished (test builds only).
func storeCreateKilled(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    setenv("SHMLRU_KILL_IN_STORE_CREATE", "1", 1)
    _ = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
    throw HelperFailure(message: "not killed inside create (not a test build?)")
}

/// store-create-exit KEY [persistent] → creates the store (capacity 8, records of
/// 64 bytes), prints dataKey=…, exits.
func storeCreateExit(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    let store = try ShmStore.create(
        key: key, configuration: .init(capacity: 8, recordSize: 64), persistent: arguments.count > 1 && arguments[1] == "persistent")
    emit("dataKey", store.cache.key)
}

/// store-open-once KEY → ShmStore.open (capacity 8, records of 64 bytes), one
/// update of "boot", prints opened=1 and dataKey=…, exits (a creator among them
/// removes its segments at exit).
func storeOpenOnce(_ arguments: [String]) throws {
    let store = try ShmStore.open(key: try keyArgument(arguments, 0), configuration: .init(capacity: 8, recordSize: 64))
    _ = try store.update("boot", as: Int.self) { ($0 ?? 0) + 1 }
    emit("opened", 1)
    emit("dataKey", store.cache.key)
}

// MARK: make stress: processes at their fd limit beside normal ones, under kills

let livenessStressCommands: [String: HelperCommand] = [
    "liveness-hammer": livenessHammer
]

/// liveness-hammer CACHEKEY STOREKEY fd-limit|normal SEED DEADLINE-NS
///
/// fd-limit: uses up its descriptors before attaching (so it cannot read its
/// start time). Then, until the monotonic clock passes DEADLINE-NS: sets and
/// reads of 64 self-describing cache values, holds inside withValue (the lent
/// bytes must not change while held: a change means the lock was taken over
/// from this live process), and sets and gets of store values. Prints
/// torn=… / robbed=… at once for each bad read, then operations=… and
/// timeouts=… at the end.
func livenessHammer(_ arguments: [String]) throws {
    let cacheKey = try keyArgument(arguments, 0)
    let storeKey = try keyArgument(arguments, 1)
    let mode = try argument(arguments, 2, "MODE")
    let seed: UInt64 = try intArgument(arguments, 3, "SEED", as: UInt64.self)
    let deadline: UInt64 = try intArgument(arguments, 4, "DEADLINE-NS", as: UInt64.self)
    var held: [Int32] = []
    if mode == "fd-limit" { held = try exhaustDescriptors(limit: 24) }
    let cache = try ShmLRU.attach(key: cacheKey, options: .init(lockTimeout: .seconds(20)))
    let store = try ShmStore.attach(key: storeKey, lockTimeout: .seconds(20))
    emit("procReadable", procReadable() ? 1 : 0)
    emit("ready", 1)
    var random = SplitMix64(seed: seed)
    var version = UInt32(truncatingIfNeeded: seed) << 20
    var operations = 0, timeouts = 0
    while _monotonicNanoseconds() < deadline {
        let hash = UInt32(random.next() % 64)
        let name = "k\(hash % 16)"
        do {
            switch random.next() % 6 {
            case 0, 1:
                version &+= 1
                try cache.set(hash, encodeValue(hash: hash, version: version, length: 20 + Int(hash % 40)))
            case 2:
                if let bytes = try cache.bytes(hash), decodeValue(bytes, hash: hash) == nil { emit("torn", "cache \(hash)") }
            case 3:
                _ = try cache.withValue(hash) { value in
                    let before = Array(value)
                    if decodeValue(before, hash: hash) == nil { emit("torn", "withValue \(hash)") }
                    usleep(200)
                    if !before.elementsEqual(value) { emit("robbed", "the value lent for \(hash) changed while held") }
                }
            case 4:
                try store.set(name, StoreProbeValue(name: name, writer: Int(seed % 1000), step: operations))
            default:
                if let value = try store.get(name, as: StoreProbeValue.self), !value.isWhole(for: name) { emit("torn", "store \(name)") }
            }
        } catch let error as ShmError where error.code == .lockTimeout {
            timeouts += 1
        }
        operations += 1
    }
    // Held to the end, then given back: an exit-time checker (LeakSanitizer
    // under `make sanitize`) needs descriptors of its own.
    for fd in held { close(fd) }
    emit("operations", operations)
    emit("timeouts", timeouts)
}
