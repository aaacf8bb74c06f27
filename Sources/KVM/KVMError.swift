#if canImport(Glibc)
import Glibc
#endif

/// An error from a KVM ioctl or from the host calls around it.
///
/// Built from `errno` in one place (`KVMError.last(_:)`), and always names the
/// operation that failed, e.g. `KVM_SET_USER_MEMORY_REGION failed: Invalid argument`.
public struct KVMError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The ioctl or system call, spelled as in the kernel headers.
    public let operation: String
    /// The `errno` value, or 0 when the failure is not an errno (see `detail`).
    public let errno: Int32
    /// Extra context for failures that are not an errno (a bad API version, a short read).
    public let detail: String?

    public init(operation: String, errno: Int32, detail: String? = nil) {
        self.operation = operation
        self.errno = errno
        self.detail = detail
    }

    /// Captures the calling thread's `errno` for `operation`.
    static func last(_ operation: String) -> KVMError {
        KVMError(operation: operation, errno: Glibc.errno)
    }

    public var description: String {
        if let detail { return "\(operation) failed: \(detail)" }
        return "\(operation) failed: \(String(cString: strerror(errno)))"
    }
}

/// A file descriptor owned by exactly one object; closed when that object goes away.
final class OwnedFD: @unchecked Sendable {
    // @unchecked: `raw` is immutable after init and close(2) runs once, in deinit.
    let raw: Int32
    init(_ raw: Int32) { self.raw = raw }
    deinit { _ = Glibc.close(raw) }
}
