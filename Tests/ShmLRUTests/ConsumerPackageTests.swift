import Glibc
import ShmLRU
import Testing

/// A new user's package, made from the README's own `Package.swift` lines (the
/// `<!-- snippet: manifest -->` block, with the package URL replaced by this
/// checkout's path) and its first cache program: it must resolve no other
/// package, build without libhiredis-dev (its headers are hidden from the build
/// when this runs as root, in a mount namespace of its own), and run, also with
/// the fault-injection variable set (a downstream build has no kill points).
@Suite struct ConsumerPackageTests {
    @Test func aConsumerOfTheCoreResolvesNothingAndNeedsNoSystemLibrary() throws {
        let readme = DocSnippetTests.snippets.filter { $0.file == "README.md" }
        let manifestBlock = try #require(readme.first { $0.kind == .manifest }, "README.md has no manifest snippet")
        let program = try #require(readme.first { $0.kind == .program }, "README.md has no program snippet")
        // The dependency line, pointed at this checkout.
        var manifest = ""
        for line in manifestBlock.code.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.contains(".package(url:") {
                manifest += "        .package(path: \"ShmLRU\"),\n"  // a link to this checkout: the identity is the name
            } else {
                manifest += line + "\n"
            }
        }
        #expect(manifest.contains(".package(path:"), "the manifest snippet names no package URL:\n\(manifestBlock.code)")
        let name = try #require(manifest.firstMatch(of: /name: "([A-Za-z]+)"/)?.1, "no package name in:\n\(manifest)")

        let directory = "/tmp/shmlru-consumer-\(getpid())"
        _ = try SpawnedProcess("/bin/rm", ["-rf", directory]).wait()
        _ = try SpawnedProcess("/bin/mkdir", ["-p", "\(directory)/Sources/\(name)"]).wait()
        defer { _ = try? SpawnedProcess("/bin/rm", ["-rf", directory]).wait() }
        _ = try SpawnedProcess("/bin/ln", ["-s", packageRoot(), "\(directory)/ShmLRU"]).wait()
        for (path, text) in [("Package.swift", manifest), ("Sources/\(name)/main.swift", program.code + "\n")] {
            let file = try #require(fopen("\(directory)/\(path)", "w"))
            fputs(text, file)
            fclose(file)
        }
        // Hide hiredis where we can (root: a private mount namespace with an
        // empty directory over its headers), so a dependency on it would fail the build.
        let hide = geteuid() == 0 && access("/usr/include/hiredis", F_OK) == 0 && access("/usr/bin/unshare", X_OK) == 0
        let build = "cd \(directory) && swift build 2>&1"
        let command = hide ? "unshare -m sh -c 'mount -t tmpfs none /usr/include/hiredis && \(build)'" : build
        let built = try SpawnedProcess("/bin/sh", ["-c", command]).wait()
        #expect(built.status == 0, "the consumer does not build:\n\(built.output)\(built.errorOutput)")
        // Resolved nothing: no checkouts, no pins.
        let checkouts = try SpawnedProcess("/bin/sh", ["-c", "ls \(directory)/.build/checkouts 2>/dev/null | wc -l"]).wait()
        #expect(checkouts.output.trimmingBlanks() == "0", "the consumer resolved packages: \(checkouts.output)")
        let resolved = readTextFile("\(directory)/Package.resolved") ?? ""
        #expect(!resolved.contains("\"identity\""), "Package.resolved pins packages:\n\(resolved)")
        #expect(!built.output.contains("Fetching"), "\(built.output)")
        // And the README's program runs in it, the same with the kill points'
        // variable set: a downstream debug build has no kill points (they need
        // this package's FaultInjection trait), so `*@1` (kill at the first point
        // reached) changes nothing.
        for environment in ["", "SHMLRU_FAULT_INJECTION='*@1' "] {
            let ran = try SpawnedProcess("/bin/sh", ["-c", "cd \(directory) && \(environment)timeout 60 .build/debug/\(name)"]).wait()
            #expect(ran.status == 0, "\(environment): \(ran.output)\(ran.errorOutput)")
        }
    }

    /// `make build` runs no package manager: what it would run (`make -n`) is
    /// SwiftPM alone, no apt-get, no installer script.
    @Test func makeBuildInstallsNothing() throws {
        let run = try SpawnedProcess("/usr/bin/make", ["-n", "-C", packageRoot(), "build"]).wait()
        #expect(run.status == 0, "\(run.errorOutput)")
        let commands = run.output.split(separator: "\n").filter { !$0.hasPrefix("make") }
        #expect(!commands.isEmpty)
        for command in commands {
            #expect(command.hasPrefix("swift build"), "make build runs: \(command)")
            for installer in ["apt", "dpkg", "pip", "with-redis", "curl", "wget"] {
                #expect(!command.contains(installer), "make build runs \(installer): \(command)")
            }
        }
    }
}
