// swift-tools-version: 6.1
// The HTTP counter of cluster-shared-memory's own test, on ShmStore: a parent and
// N worker processes serving one port (SO_REUSEPORT). A nested package, so that
// the library's package gains no dependency. Run it with `make example-http`.
import PackageDescription

let package = Package(
    name: "HTTPCounter",
    dependencies: [
        .package(name: "ShmLRU", path: "../.."),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .executableTarget(
            name: "HTTPCounter",
            dependencies: [
                .product(name: "ShmLRU", package: "ShmLRU"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)])
    ]
)
