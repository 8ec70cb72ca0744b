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
    ],
    dependencies: [
        // Only the command-line tool uses it; the library depends on the toolchain alone.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "CShm", path: "Sources/CShm"),
        .target(name: "ShmLRU", dependencies: ["CShm"], swiftSettings: strict),
        .executableTarget(
            name: "shm-lru",
            dependencies: ["ShmLRU", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict),
        .executableTarget(name: "MasterWorker", dependencies: ["ShmLRU"], path: "Examples/MasterWorker", swiftSettings: strict),
        // Two unrelated programs meeting through an ftok path key.
        .executableTarget(name: "CacheProducer", dependencies: ["ShmLRU"], path: "Examples/CacheProducer", swiftSettings: strict),
        .executableTarget(name: "CacheConsumer", dependencies: ["ShmLRU"], path: "Examples/CacheConsumer", swiftSettings: strict),
        // `make bench`: the fixed workload of ../shared/bench/WORKLOAD.md (release build).
        // Peers/ holds the C++ peers of `make bench-peers`, built by the Makefile, not by SwiftPM.
        .executableTarget(name: "ShmLRUBench", dependencies: ["ShmLRU", "CShm"], exclude: ["Peers"], swiftSettings: strict),
        // Spawned by the tests as a separate process (posix_spawn): the other side of every multi-process test.
        .executableTarget(
            name: "ShmLRUTestHelper", dependencies: ["ShmLRU", "CShm", "ShmLRUTestSupport"], path: "Tests/ShmLRUTestHelper",
            swiftSettings: strict),
        // What the helper and the tests both need: a replayable generator and self-describing values.
        .target(name: "ShmLRUTestSupport", path: "Tests/ShmLRUTestSupport", swiftSettings: strict),
        .testTarget(
            name: "ShmLRUTests", dependencies: ["ShmLRU", "CShm", "ShmLRUTestHelper", "ShmLRUTestSupport"], swiftSettings: strict),
    ]
)
