import ArgumentParser
import ShmLRU

struct RemoveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove a cache's segment.",
        discussion: """
            Marks the segment for removal (IPC_RMID): its key is free at once, and its \
            memory goes when the last attached process detaches. Refuses a segment that \
            is not a ShmLRU cache unless --force is given.
            """)

    @Argument(help: "The segment's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Flag(help: "Remove the segment even if it is not a ShmLRU cache.")
    var force = false

    func run() throws {
        try reporting {
            var attached = 0
            do throws(ShmError) {
                attached = try ShmLRU.probe(key: key).attachCount
            } catch {
                let foreign = error.code == .incompatibleSegment || error.code == .corrupted
                guard foreign else { throw describe(error, key: key) }
                guard force else {
                    throw ToolFailure(
                        describe(error, key: key).message + "; not removed (use --force)", exitCode: Exit.notShmLRU)
                }
                attached = ShmRegion.list().first { $0.key == key }?.attachCount ?? 0
            }
            do throws(ShmError) { try ShmRegion.remove(key: key) } catch { throw describe(error, key: key) }
            print("removed \(key)" + (attached > 0 ? " (\(attached) process(es) still attached: the memory goes when they detach)" : ""))
        }
    }
}
