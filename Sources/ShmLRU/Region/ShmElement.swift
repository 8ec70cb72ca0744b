/// The element types a region can be viewed as: those of shm-typed-array
/// (Buffer/Uint8, Int8, Int16, Uint16, Int32, Uint32, Float32, Float64), plus 64-bit integers.
public protocol ShmElement: BitwiseCopyable, Sendable {
    /// The name used in messages and by the command-line tool.
    static var shmTypeName: String { get }
}

extension UInt8: ShmElement { public static var shmTypeName: String { "UInt8" } }
extension Int8: ShmElement { public static var shmTypeName: String { "Int8" } }
extension UInt16: ShmElement { public static var shmTypeName: String { "UInt16" } }
extension Int16: ShmElement { public static var shmTypeName: String { "Int16" } }
extension UInt32: ShmElement { public static var shmTypeName: String { "UInt32" } }
extension Int32: ShmElement { public static var shmTypeName: String { "Int32" } }
extension UInt64: ShmElement { public static var shmTypeName: String { "UInt64" } }
extension Int64: ShmElement { public static var shmTypeName: String { "Int64" } }
extension Float: ShmElement { public static var shmTypeName: String { "Float" } }
extension Double: ShmElement { public static var shmTypeName: String { "Double" } }
