import Glibc
import ShmLRU
import ShmLRUTestSupport

typealias HelperCommand = @Sendable ([String]) throws -> Void

struct HelperFailure: Error { var message: String }

/// Minimal unbuffered output (no Foundation in the helper).
struct FileHandleLite {
    let fd: Int32
    static let standardOutput = FileHandleLite(fd: 1)
    static let standardError = FileHandleLite(fd: 2)
    func write(_ text: String) {
        var text = text
        text.withUTF8 { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n <= 0 { return }
                offset += n
            }
        }
    }
}

func emit(_ key: String, _ value: Any) { FileHandleLite.standardOutput.write("\(key)=\(value)\n") }

func argument(_ arguments: [String], _ index: Int, _ name: String) throws -> String {
    guard index < arguments.count else { throw HelperFailure(message: "missing argument \(name)") }
    return arguments[index]
}
func keyArgument(_ arguments: [String], _ index: Int) throws -> ShmKey {
    let text = try argument(arguments, index, "KEY")
    guard let key = ShmKey(parsing: text) else { throw HelperFailure(message: "bad key \(text)") }
    return key
}
func intArgument<T: FixedWidthInteger>(_ arguments: [String], _ index: Int, _ name: String, as: T.Type = Int.self) throws -> T {
    let text = try argument(arguments, index, name)
    guard let value = T(text) else { throw HelperFailure(message: "bad \(name) \(text)") }
    return value
}
