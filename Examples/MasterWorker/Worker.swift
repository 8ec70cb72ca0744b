import Glibc
import ShmLRU

// Worker mode (`--worker ID [--fail-at STEP]`): answers the master's commands,
// one at a time, until its command pipe closes or it is told to exit.
//
//   shm BUFKEY ARRKEY             attach the byte and Float regions, read [0] of each
//   lru KEY RECORDSIZE H1,H2,…    attach the LRU as a non-initializer, read every hash
//   lru-reload H1,H2,…            rebuild this process's hash map, read every hash again
//   typed ROUND                   read buf[0] and arr[0] again
//   exit                          detach everything and exit 0

func runWorker(_ arguments: [String]) -> Int32 {
    guard let idText = arguments.first, let id = Int(idText) else {
        sayError("worker", "usage: MasterWorker --worker ID [--fail-at STEP]")
        return 2
    }
    let failAt = arguments.count >= 3 && arguments[1] == "--fail-at" ? arguments[2] : nil
    let me = "worker \(id)"
    // A Ctrl-C in the terminal reaches the whole process group: the master
    // decides, and closes our command pipe.
    signal(SIGINT, SIG_IGN)
    signal(SIGPIPE, SIG_IGN)
    let commands = LineReader(fd: workerCommandFD)
    say(me, "started, pid \(getpid())")

    var buf: ShmArray<UInt8>?
    var arr: ShmArray<Float>?
    var lruKey: ShmKey?

    func reply(_ text: String) { writeAll(workerReplyFD, text + "\n") }

    while true {
        let line: String?
        do { line = try commands.readLine() } catch {
            sayError(me, error.message)
            return 1
        }
        guard let line else {
            sayError(me, "the master went away; exiting")
            return 1
        }
        let words = line.split(separator: " ").map(String.init)
        guard let command = words.first else { continue }
        if command == failAt {
            say(me, "simulating a crash during '\(command)' (--fail-at): exiting with status 3")
            _exit(3)
        }
        switch command {
        case "shm":
            guard words.count == 3, let bufKey = ShmKey(parsing: words[1]), let arrKey = ShmKey(parsing: words[2]),
                let bufRegion = Shm.get(bufKey), let arrRegion = Shm.get(arrKey, .float32)
            else {
                reply("error cannot attach the regions of '\(line)'")
                continue
            }
            buf = bufRegion.array(of: UInt8.self)
            arr = arrRegion.array(of: Float.self)
            say(me, "attached buf \(bufKey) (\(buf!.count) bytes) and arr \(arrKey) (\(arr!.count) Floats)")
            say(me, "Get buf[0]=\(buf![0]) arr[0]=\(arr![0])")
            reply("ok buf0=\(buf![0]) arr0=\(arr![0])")

        case "lru":
            guard words.count == 4, let key = ShmKey(parsing: words[1]), let recordSize = Int(words[2]),
                Shm.get(key) != nil
            else {
                reply("error cannot attach the LRU segment of '\(line)'")
                continue
            }
            // Not the initializer: attach to what the master laid out, and build
            // this process's hash map from the records.
            guard let count = Shm.initLRU(key, recordSize, 0, false) else {
                reply("error initLRU(\(key), \(recordSize), false): \(Shm.get_last_reason(key))")
                continue
            }
            lruKey = key
            say(me, "initLRU(\(key), \(recordSize), initializer: false) -> \(count) records")
            reply("ok " + readHashes(me, key, words[3], label: "CHILD"))

        case "lru-reload":
            guard let key = lruKey, words.count == 2 else {
                reply("error 'lru-reload' before 'lru'")
                continue
            }
            guard Shm.reload_hash_map(key) else {
                reply("error reload_hash_map: \(Shm.get_last_reason(key))")
                continue
            }
            say(me, "reload_hash_map(\(key))")
            reply("ok " + readHashes(me, key, words[1], label: "CHILD AFTER RELOAD"))

        case "typed":
            guard let buf, let arr, words.count == 2 else {
                reply("error 'typed' before 'shm'")
                continue
            }
            say(me, "\(words[1]) Get buf[0]=\(buf[0]) arr[0]=\(arr[0])")
            reply("ok buf0=\(buf[0]) arr0=\(arr[0])")

        case "exit":
            if let arr {
                // As shm-typed-lru's worker does: detach one region explicitly.
                let left = Shm.detach(arr.region.key)
                say(me, "detach(arr) -> \(left) attachment(s) left")
            }
            buf = nil
            arr = nil
            let detached = Shm.detachAll()
            say(me, "detachAll() -> \(detached) segment(s) detached; exiting")
            reply("ok")
            return 0

        default:
            reply("error unknown command '\(command)'")
        }
    }
}

/// Reads each hash of a comma-separated list, prints it as shm-typed-lru did, and
/// returns the reply fields `HASH=HEXVALUE` (or `HASH=-` for a miss).
private func readHashes(_ me: String, _ key: ShmKey, _ list: String, label: String) -> String {
    var fields: [String] = []
    for text in list.split(separator: ",") {
        guard let hash = UInt32(text) else { continue }
        if let value = Shm.get_el_hash(key, hash) {
            say(me, "\(label) >> hash[\(hash)]: value[\(value)]")
            fields.append("\(hash)=\(hexEncode(value))")
        } else {
            let reason = Shm.get_last_reason(key)
            say(me, "\(label) >> hash[\(hash)]: missing (\(reason == "OK" ? "not in the cache" : reason))")
            fields.append("\(hash)=-")
        }
    }
    return fields.joined(separator: " ")
}
