import Glibc
import Synchronization

/// Buffered command output on a file descriptor, written with `write(2)`.
///
/// `FileHandle.write` traps on `EPIPE` on Linux, and a CLI whose output is piped into `head` must not crash, so
/// output goes through this type instead: `EPIPE` becomes ``CtlError/outputClosed`` (a quiet exit 0), any other
/// write error a ``CtlError`` with exit code 1. Diagnostics go through swift-log, never through this type.
///
/// Owned by the one thread that runs the command (not `Sendable`).
final class OutputSink {
    /// The descriptor written to (1 for stdout).
    let fd: Int32
    /// Whether the descriptor is a terminal (decides colour in `auto` mode).
    let isTerminal: Bool
    /// Bytes not yet written.
    private var buffer: [UInt8] = []
    /// Flush once this many bytes are buffered.
    private let flushThreshold = 64 * 1024

    /// Creates a sink.
    /// - Parameters:
    ///   - fd: The descriptor (default stdout).
    init(fd: Int32 = STDOUT_FILENO) {
        self.fd = fd
        self.isTerminal = isatty(fd) == 1
        buffer.reserveCapacity(flushThreshold)
    }

    /// Appends text and a newline; flushes when the buffer is large.
    /// - Parameters:
    ///   - line: One line without its newline.
    /// - Throws: ``CtlError`` if a flush fails.
    func writeLine(_ line: String) throws(CtlError) {
        buffer.append(contentsOf: line.utf8)
        buffer.append(10)
        if buffer.count >= flushThreshold { try flush() }
    }

    /// Appends bytes as they are; flushes when the buffer is large.
    /// - Parameters:
    ///   - bytes: Bytes to write.
    /// - Throws: ``CtlError`` if a flush fails.
    func write(bytes: [UInt8]) throws(CtlError) {
        buffer.append(contentsOf: bytes)
        if buffer.count >= flushThreshold { try flush() }
    }

    /// Writes everything buffered.
    /// - Throws: ``CtlError/outputClosed`` on `EPIPE`, ``CtlError`` (exit 1) on another write error.
    func flush() throws(CtlError) {
        guard !buffer.isEmpty else { return }
        defer { buffer.removeAll(keepingCapacity: true) }
        var failure: Int32 = 0
        buffer.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, base + offset, raw.count - offset)
                if n > 0 {
                    offset += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    failure = n < 0 ? errno : EIO
                    return
                }
            }
        }
        if failure == EPIPE { throw CtlError.outputClosed }
        if failure != 0 { throw CtlError.usage("cannot write output: \(String(cString: strerror(failure)))") }
    }
}

/// One line on stderr (best effort, unbuffered): the final error message of a failed command.
/// - Parameters:
///   - line: The line without its newline.
func writeStandardError(_ line: String) {
    var bytes = Array(line.utf8)
    bytes.append(10)
    bytes.withUnsafeBytes { raw in
        guard let base = raw.baseAddress else { return }
        var offset = 0
        while offset < raw.count {
            let n = Glibc.write(STDERR_FILENO, base + offset, raw.count - offset)
            if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue } else { return }
        }
    }
}

/// The signal (SIGINT or SIGTERM) that asked the running command to stop, or 0.
///
/// A global `Atomic` because a signal handler can touch nothing else safely; the command polls it between bounded
/// waits (every receive and every backoff sleep is sliced to at most 200 ms).
let stopSignal = Atomic<Int32>(0)

/// Installs SIGINT/SIGTERM handlers that record the signal in ``stopSignal``.
enum StopSignals {
    /// Installs the handlers (idempotent).
    static func install() {
        var action = sigaction()
        // A second signal ends the process at once (`_exit` is async-signal-safe), in case a bounded wait such as a
        // connect timeout is still running.
        action.__sigaction_handler.sa_handler = { signal in
            if stopSignal.exchange(signal, ordering: .relaxed) != 0 { _exit(128 + signal) }
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        _ = sigaction(SIGINT, &action, nil)
        _ = sigaction(SIGTERM, &action, nil)
    }

    /// Whether a stop was requested.
    static var requested: Bool { stopSignal.load(ordering: .relaxed) != 0 }

    /// Sleeps up to `duration`, in slices of at most 50 ms, returning early when a stop is requested.
    /// - Parameters:
    ///   - duration: The longest sleep.
    /// - Returns: `false` if a stop was requested.
    static func sleep(_ duration: Duration) -> Bool {
        let deadline = ContinuousClock.now + duration
        while ContinuousClock.now < deadline {
            if requested { return false }
            let left = ContinuousClock.now.duration(to: deadline)
            let slice = min(left, .milliseconds(50))
            let micros = slice.components.seconds * 1_000_000 + slice.components.attoseconds / 1_000_000_000_000
            if micros > 0 { usleep(UInt32(micros)) }
        }
        return !requested
    }
}
