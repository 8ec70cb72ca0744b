import ShmLRU
import Testing

@Suite struct SmokeTests {
    @Test func setGetAcrossProcesses() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 64, capacity: 16)
            let offset = try cache.set(7, "seven").offset
            #expect(try cache.string(7) == "seven")
            #expect(try cache.string(atOffset: offset) == "seven")
            let run = try runHelper(["lru-get", key.description, "7"])
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(run.values["value"] == "seven")
            let set = try runHelper(["lru-set", key.description, "8", "eight"])
            #expect(set.status == 0, "\(set.errorOutput)")
            #expect(try cache.string(8) == "eight")
            #expect(try cache.verify().isClean)
        }
    }
}
