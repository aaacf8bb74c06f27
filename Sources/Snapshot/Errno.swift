#if canImport(Glibc)
import Glibc
#endif

/// strerror(3), for error messages.
func describeErrno(_ e: Int32) -> String { String(cString: strerror(e)) }
