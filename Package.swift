// swift-tools-version: 6.1
import PackageDescription

// One package, one core, and package traits for everything else.
//
// The `ShmLRU` product depends on the Swift toolchain and libc alone: a package that
// depends on it (with the default traits, which are none) resolves no other package and
// needs no system library. Every integration is a product of its own whose package
// dependencies are conditioned on a trait, so SwiftPM resolves and builds them only for
// a consumer that enables that trait:
//
//     .package(url: "https://github.com/…/ShmLRU", from: "1.0.0", traits: ["Hummingbird"])
//
// `make test` builds with every trait enabled (`--enable-all-traits`).

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("MemberImportVisibility"),
]

/// Products of a package, guarded by a trait: the dependency exists only when the trait is on.
func product(_ name: String, _ package: String, _ trait: String) -> Target.Dependency {
    .product(name: name, package: package, condition: .when(traits: [trait]))
}

let package = Package(
    name: "ShmLRU",
    products: [
        .library(name: "ShmLRU", targets: ["ShmLRU"]),
        // Integrations: each needs its trait (the product builds empty without it).
        .library(name: "ShmLRUHummingbird", targets: ["ShmLRUHummingbird"]),
        .library(name: "ShmLRUVapor", targets: ["ShmLRUVapor"]),
        .library(name: "ShmLRURedis", targets: ["ShmLRURedis"]),
        .library(name: "ShmLRUMetrics", targets: ["ShmLRUMetrics"]),
        .library(name: "ShmLRULogging", targets: ["ShmLRULogging"]),
        .library(name: "ShmLRULifecycle", targets: ["ShmLRULifecycle"]),
        .executable(name: "shm-lru", targets: ["shm-lru"]),
        // Examples and benches (toolchain alone unless noted).
        .executable(name: "MasterWorker", targets: ["MasterWorker"]),
        .executable(name: "CacheProducer", targets: ["CacheProducer"]),
        .executable(name: "CacheConsumer", targets: ["CacheConsumer"]),
        .executable(name: "HTTPCounter", targets: ["HTTPCounter"]),
        .executable(name: "ShmLRUBench", targets: ["ShmLRUBench"]),
        .executable(name: "ShmLRURedisBench", targets: ["ShmLRURedisBench"]),
    ],
    traits: [
        .trait(name: "CLI", description: "The shm-lru command-line tool (swift-argument-parser)."),
        .trait(name: "Metrics", description: "ShmLRUMetrics: a swift-metrics reporter."),
        .trait(name: "Logging", description: "ShmLRULogging: swift-log events."),
        .trait(name: "Lifecycle", description: "ShmLRULifecycle: ServiceLifecycle services.", enabledTraits: ["Logging"]),
        .trait(
            name: "Redis", description: "ShmLRURedis: the per-machine near cache in front of Redis (libhiredis-dev).",
            enabledTraits: ["Lifecycle"]),
        .trait(name: "Hummingbird", description: "ShmLRUHummingbird: a Hummingbird 2 PersistDriver."),
        .trait(name: "Vapor", description: "ShmLRUVapor: a Vapor 4 Cache and its provider."),
        .trait(
            name: "FaultInjection",
            description: "This project's own test and fuzz builds only: kill points, corruption harness, invariant checks."),
        .default(enabledTraits: []),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/vapor/vapor", from: "4.122.3"),
    ],
    targets: [
        // MARK: The core (toolchain alone)
        .systemLibrary(name: "CShm", path: "Sources/CShm"),
        // SHMLRU_TESTING compiles the kill points, the corruption harness and
        // _checkInvariants into the project's own test builds (trait FaultInjection)
        // and `make fuzz`: never into an app, debug or release.
        .target(
            name: "ShmLRU", dependencies: ["CShm"],
            swiftSettings: strict + [.define("SHMLRU_TESTING", .when(traits: ["FaultInjection"]))]),

        // MARK: Integrations (trait-gated)
        .target(
            name: "ShmLRUMetrics", dependencies: ["ShmLRU", product("Metrics", "swift-metrics", "Metrics")],
            swiftSettings: strict),
        .target(
            name: "ShmLRULogging", dependencies: ["ShmLRU", product("Logging", "swift-log", "Logging")],
            swiftSettings: strict),
        .target(
            name: "ShmLRULifecycle",
            dependencies: ["ShmLRU", product("ServiceLifecycle", "swift-service-lifecycle", "Lifecycle")],
            swiftSettings: strict),
        // Headers from /usr/include/hiredis, linked by its module map (no pkg-config:
        // its flags carry -D_FILE_OFFSET_BITS=64, which SwiftPM warns about on every command).
        .systemLibrary(
            name: "CHiredis", path: "Sources/CHiredis",
            providers: [.apt(["libhiredis-dev"])]),
        .target(
            name: "ShmLRURedis",
            dependencies: [
                "ShmLRU", .target(name: "CHiredis", condition: .when(traits: ["Redis"])),
                product("ServiceLifecycle", "swift-service-lifecycle", "Redis"),
            ],
            swiftSettings: strict),
        .target(
            name: "ShmLRUHummingbird",
            dependencies: ["ShmLRU", product("Hummingbird", "hummingbird", "Hummingbird")],
            swiftSettings: strict),
        .target(
            name: "ShmLRUVapor", dependencies: ["ShmLRU", product("Vapor", "vapor", "Vapor")],
            swiftSettings: strict),
        .executableTarget(
            name: "shm-lru", dependencies: ["ShmLRU", product("ArgumentParser", "swift-argument-parser", "CLI")],
            swiftSettings: strict),

        // MARK: Examples
        .executableTarget(name: "MasterWorker", dependencies: ["ShmLRU"], path: "Examples/MasterWorker", swiftSettings: strict),
        // Two unrelated programs meeting through an ftok path key.
        .executableTarget(name: "CacheProducer", dependencies: ["ShmLRU"], path: "Examples/CacheProducer", swiftSettings: strict),
        .executableTarget(name: "CacheConsumer", dependencies: ["ShmLRU"], path: "Examples/CacheConsumer", swiftSettings: strict),
        // A server process that SIGTERM stops cleanly (spawned by the lifecycle test).
        .executableTarget(
            name: "GracefulShutdown",
            dependencies: [
                "ShmLRU", "ShmLRULifecycle", product("ServiceLifecycle", "swift-service-lifecycle", "Lifecycle"),
                product("UnixSignals", "swift-service-lifecycle", "Lifecycle"), product("Logging", "swift-log", "Lifecycle"),
            ],
            path: "Examples/GracefulShutdown", swiftSettings: strict),
        // cluster-shared-memory's HTTP test as a Hummingbird Router server of N worker
        // processes on one port, counting requests in a ShmStore (trait Hummingbird).
        .executableTarget(
            name: "HTTPCounter",
            dependencies: ["ShmLRU", "ShmLRUHummingbird", product("Hummingbird", "hummingbird", "Hummingbird")],
            path: "Examples/HTTPCounter", exclude: ["load.sh"], swiftSettings: strict),

        // MARK: Benches
        // `make bench`: the fixed workload of ../shared/bench/WORKLOAD.md (release build).
        // Python/ holds the libCacheSim replay script and Peers/ the C++ peers of
        // `make bench-peers`: run and built by the Makefile, not by SwiftPM.
        .executableTarget(
            name: "ShmLRUBench", dependencies: ["ShmLRU", "CShm"], exclude: ["Python", "Peers"], swiftSettings: strict),
        .executableTarget(
            name: "ShmLRURedisBench",
            dependencies: ["ShmLRURedis", "ShmLRU", .target(name: "CHiredis", condition: .when(traits: ["Redis"]))],
            swiftSettings: strict),

        // MARK: Tests
        // Spawned by the tests as a separate process (posix_spawn): the other side of every multi-process test.
        .executableTarget(
            name: "ShmLRUTestHelper", dependencies: ["ShmLRU", "CShm", "ShmLRUTestSupport"], path: "Tests/ShmLRUTestHelper",
            swiftSettings: strict),
        // What the helper and the tests both need: a replayable generator and self-describing values.
        .target(name: "ShmLRUTestSupport", path: "Tests/ShmLRUTestSupport", swiftSettings: strict),
        // The CLI and observability tests in it need their traits (`make test` enables all).
        .testTarget(
            name: "ShmLRUTests",
            dependencies: ["ShmLRU", "CShm", "ShmLRUTestHelper", "ShmLRUTestSupport", "ShmLRUMetrics", "ShmLRULogging", "ShmLRULifecycle",
                "GracefulShutdown", product("MetricsTestKit", "swift-metrics", "Metrics"),
                product("InMemoryLogging", "swift-log", "Logging"),
                product("ServiceLifecycle", "swift-service-lifecycle", "Lifecycle"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "ShmLRURedisTestHelper", dependencies: ["ShmLRURedis", "ShmLRU"], path: "Tests/ShmLRURedisTestHelper",
            swiftSettings: strict),
        // The near cache's Hummingbird handler test needs trait Hummingbird too.
        .testTarget(
            name: "ShmLRURedisTests",
            dependencies: [
                "ShmLRURedis", "ShmLRU", "ShmLRURedisTestHelper", product("Hummingbird", "hummingbird", "Hummingbird"),
                product("HummingbirdTesting", "hummingbird", "Hummingbird"),
                product("ServiceLifecycle", "swift-service-lifecycle", "Redis"),
                product("ServiceLifecycleTestKit", "swift-service-lifecycle", "Redis"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "ShmLRUHummingbirdTests",
            dependencies: [
                "ShmLRU", "ShmLRUHummingbird", product("Hummingbird", "hummingbird", "Hummingbird"),
                product("HummingbirdTesting", "hummingbird", "Hummingbird"),
                // Spawned: the other process of the multi-process tests, and the Router example.
                "ShmLRUTestSupport", "ShmLRUTestHelper", "HTTPCounter",
            ],
            swiftSettings: strict),
        .testTarget(
            name: "ShmLRUVaporTests",
            dependencies: [
                "ShmLRU", "ShmLRUVapor", product("Vapor", "vapor", "Vapor"), product("VaporTesting", "vapor", "Vapor"),
                "ShmLRUTestSupport", "ShmLRUTestHelper",  // the other process of the multi-process test
            ],
            swiftSettings: strict),
    ]
)

// `make docs` sets SHMLRU_DOCS=1 (with its own scratch path, .build-docs) to add the
// DocC plugin for that build alone: the package's dependency graph never has it.
if Context.environment["SHMLRU_DOCS"] == "1" {
    package.dependencies.append(.package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"))
}
