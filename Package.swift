// swift-tools-version: 6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "ShmLRU",
    products: [
        .library(name: "ShmLRU", targets: ["ShmLRU"]),
        .executable(name: "shm-lru", targets: ["shm-lru"]),
        .executable(name: "MasterWorker", targets: ["MasterWorker"]),
        .executable(name: "CacheProducer", targets: ["CacheProducer"]),
        .executable(name: "CacheConsumer", targets: ["CacheConsumer"]),
        .executable(name: "ShmLRUBench", targets: ["ShmLRUBench"]),
        // Optional integrations: each its own product, so the core depends on the toolchain alone.
        .library(name: "ShmLRUMetrics", targets: ["ShmLRUMetrics"]),
        .library(name: "ShmLRULogging", targets: ["ShmLRULogging"]),
        .library(name: "ShmLRULifecycle", targets: ["ShmLRULifecycle"]),
        // The per-machine near cache in front of Redis: needs hiredis (Debian libhiredis-dev); ShmLRU does not.
        .library(name: "ShmLRURedis", targets: ["ShmLRURedis"]),
        .executable(name: "ShmLRURedisBench", targets: ["ShmLRURedisBench"]),
    ],
    dependencies: [
        // Only the command-line tool uses it; the library depends on the toolchain alone.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // Only the optional integration products use these.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        .systemLibrary(name: "CShm", path: "Sources/CShm"),
        // SHMLRU_TESTING compiles the kill points, the corruption harness and
        // _checkInvariants into debug (test) builds only: a release build has none.
        .target(
            name: "ShmLRU", dependencies: ["CShm"],
            swiftSettings: strict + [.define("SHMLRU_TESTING", .when(configuration: .debug))]),
        .executableTarget(
            name: "shm-lru",
            dependencies: ["ShmLRU", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict),
        .executableTarget(name: "MasterWorker", dependencies: ["ShmLRU"], path: "Examples/MasterWorker", swiftSettings: strict),
        // Two unrelated programs meeting through an ftok path key.
        .executableTarget(name: "CacheProducer", dependencies: ["ShmLRU"], path: "Examples/CacheProducer", swiftSettings: strict),
        .executableTarget(name: "CacheConsumer", dependencies: ["ShmLRU"], path: "Examples/CacheConsumer", swiftSettings: strict),
        // `make bench`: the fixed workload of ../shared/bench/WORKLOAD.md (release build).
        // Python/ holds the libCacheSim replay script and Peers/ the C++ peers of
        // `make bench-peers`: run and built by the Makefile, not by SwiftPM.
        .executableTarget(
            name: "ShmLRUBench", dependencies: ["ShmLRU", "CShm"], exclude: ["Python", "Peers"], swiftSettings: strict),
        // Spawned by the tests as a separate process (posix_spawn): the other side of every multi-process test.
        .executableTarget(
            name: "ShmLRUTestHelper", dependencies: ["ShmLRU", "CShm", "ShmLRUTestSupport"], path: "Tests/ShmLRUTestHelper",
            swiftSettings: strict),
        // What the helper and the tests both need: a replayable generator and self-describing values.
        .target(name: "ShmLRUTestSupport", path: "Tests/ShmLRUTestSupport", swiftSettings: strict),
        // swift-metrics reporter, swift-log hook, ServiceLifecycle service (Sources/ShmLRUMetrics …).
        .target(name: "ShmLRUMetrics", dependencies: ["ShmLRU", .product(name: "Metrics", package: "swift-metrics")], swiftSettings: strict),
        .target(name: "ShmLRULogging", dependencies: ["ShmLRU", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .target(
            name: "ShmLRULifecycle",
            dependencies: ["ShmLRU", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")], swiftSettings: strict),
        // A server process that SIGTERM stops cleanly (spawned by the lifecycle test).
        .executableTarget(
            name: "GracefulShutdown",
            dependencies: [
                "ShmLRU", "ShmLRULifecycle", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"), .product(name: "Logging", package: "swift-log"),
            ],
            path: "Examples/GracefulShutdown", swiftSettings: strict),
        // Redis near cache (issue 17): hiredis, its target, its bench, its tests and their helper process.
        // Headers from /usr/include/hiredis, linked by its module map (no pkg-config:
        // its flags carry -D_FILE_OFFSET_BITS=64, which SwiftPM warns about on every command).
        .systemLibrary(name: "CHiredis", path: "Sources/CHiredis"),
        .target(name: "ShmLRURedis", dependencies: ["ShmLRU", "CHiredis"], swiftSettings: strict),
        .executableTarget(name: "ShmLRURedisBench", dependencies: ["ShmLRURedis", "ShmLRU", "CHiredis"], swiftSettings: strict),
        .executableTarget(
            name: "ShmLRURedisTestHelper", dependencies: ["ShmLRURedis", "ShmLRU"], path: "Tests/ShmLRURedisTestHelper",
            swiftSettings: strict),
        .testTarget(name: "ShmLRURedisTests", dependencies: ["ShmLRURedis", "ShmLRU", "ShmLRURedisTestHelper"], swiftSettings: strict),
        .testTarget(
            name: "ShmLRUTests",
            dependencies: [
                "ShmLRU", "CShm", "ShmLRUTestHelper", "ShmLRUTestSupport", "ShmLRUMetrics", "ShmLRULogging", "ShmLRULifecycle",
                "GracefulShutdown", .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "InMemoryLogging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
    ]
)

// `make docs` sets SHMLRU_DOCS=1 (with its own scratch path, .build-docs) to add the
// DocC plugin for that build alone: the package's dependency graph never has it.
if Context.environment["SHMLRU_DOCS"] == "1" {
    package.dependencies.append(.package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"))
}
