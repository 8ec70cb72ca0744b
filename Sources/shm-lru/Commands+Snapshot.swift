#if CLI
import ArgumentParser
import Glibc
import ShmLRU

// store snapshot|restore: a store's entries to a file and back (warm restarts;
// the library's ShmStore.snapshot(to:) and restore(from:)).

struct StoreSnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Write the store's live entries to a snapshot file, while it serves.",
        discussion: """
            The file is written under a temporary name, synced and renamed over FILE: a \
            snapshot interrupted at any point leaves the previous FILE whole. Prints the \
            entries and bytes written.
            """)

    @Argument(help: "The store's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Argument(help: "The snapshot file (replaced).")
    var file: String

    func run() throws {
        try reporting {
            let store = try openStore(key)
            defer { try? store.detach() }
            let report: ShmStore.SnapshotReport
            do throws(ShmError) { report = try store.snapshot(to: file) } catch { throw ToolFailure(error.description, exitCode: Exit.failure) }
            print("entries  \(report.entries)")
            print("bytes  \(report.bytes)")
            print("expired  \(report.skippedExpired)")
        }
    }
}

struct StoreRestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Fill a store from a snapshot file.",
        discussion: """
            Restores into the store under KEY; when there is none, creates it (persistent, \
            so it outlives this command) with the configuration the snapshot records. \
            Entries that expired since the snapshot are left out; a store with less room \
            keeps the entries the snapshot's policy preferred. A file damaged after its \
            header restores the entries before the damage, prints where it is and exits 4.
            """)

    @Argument(help: "The store's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Argument(help: "The snapshot file.")
    var file: String

    func run() throws {
        try reporting {
            let summary: ShmStore.SnapshotSummary
            do throws(ShmError) { summary = try ShmStore.inspectSnapshot(at: file) } catch { throw ToolFailure(error.description, exitCode: Exit.failure) }
            let store: ShmStore
            if ShmRegion.exists(key: key) {
                store = try openStore(key)
            } else {
                do throws(ShmError) {
                    store = try ShmStore.create(key: key, configuration: summary.configuration, persistent: true)
                    print("created  \(key)")
                } catch { throw describe(error, key: key) }
            }
            defer { try? store.detach() }
            let report: ShmStore.RestoreReport
            do throws(ShmError) { report = try store.restore(from: file) } catch { throw ToolFailure(error.description, exitCode: Exit.failure) }
            print("restored  \(report.restored)")
            print("expired  \(report.skippedExpired)")
            print("no room  \(report.skippedNoRoom)")
            if let damage = report.damage {
                throw ToolFailure("\(file) is damaged \(damage)", exitCode: Exit.problems)
            }
        }
    }
}
#endif  // CLI
