// Failures the operator sees: one line on stderr and a documented exit code (docs/operations.md, "Exit codes").

/// The exit codes of `gatewayctl` (documented in `docs/operations.md` and `gatewayctl --help`).
enum CtlExitCode: Int32, Sendable {
    /// Success.
    case ok = 0
    /// Bad usage or arguments, or a local failure (unreadable file, output that cannot be written).
    case usage = 1
    /// The gateway cannot be reached, refused the connection or the token (close 4001, HTTP 401), or broke the
    /// protocol.
    case connection = 2
    /// The session, directory or resource does not exist, or the token may not read it (`forbidden`, HTTP 403).
    case notFound = 3
    /// The transcript log is damaged in the middle (`log verify` found damage, or a read hit it).
    case damage = 4
}

/// A failure reported to the operator as `gatewayctl: <message>` on stderr, with a specific exit code.
///
/// Messages never contain raw bytes from the network or the log: everything that came from outside is passed
/// through ``TextEscaper`` first.
struct CtlError: Error, CustomStringConvertible, Sendable {
    /// The process exit code.
    let exitCode: CtlExitCode
    /// One line of text for stderr.
    let message: String

    /// Creates a failure.
    /// - Parameters:
    ///   - exitCode: The exit code.
    ///   - message: One line (no trailing newline).
    init(_ exitCode: CtlExitCode, _ message: String) {
        self.exitCode = exitCode
        self.message = message
    }

    /// Bad arguments or a local failure (exit 1).
    static func usage(_ message: String) -> CtlError { CtlError(.usage, message) }
    /// Connection or authentication failure (exit 2).
    static func connection(_ message: String) -> CtlError { CtlError(.connection, message) }
    /// Not found or forbidden (exit 3).
    static func notFound(_ message: String) -> CtlError { CtlError(.notFound, message) }
    /// Damaged transcript data (exit 4).
    static func damage(_ message: String) -> CtlError { CtlError(.damage, message) }

    /// stdout was closed by the reader (for example `gatewayctl tail … | head`): the command ends quietly with 0.
    static let outputClosed = CtlError(.ok, "")

    /// The message.
    var description: String { message }
}
