import Dispatch
import Foundation

/// The monotonic clock every deadline, window and token bucket of the gateway runs on.
enum MonotonicClock {
    /// Nanoseconds since an arbitrary start (never jumps with the wall clock).
    static func nowNs() -> UInt64 {
        DispatchTime.now().uptimeNanoseconds
    }
}

/// Wall-clock time for event timestamps and token expiry.
enum WallClock {
    /// Milliseconds since the Unix epoch.
    static func nowMs() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1_000).rounded(.down))
    }
}
