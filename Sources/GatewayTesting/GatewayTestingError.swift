/// The one public error type of `GatewayTesting` (house rule 2): child processes, temporary files, and the test
/// harness's own waits. Errors of the WebSocket client itself are `GatewayClientError`.
///
/// Errors compare equal when their codes match, so tests can write
/// `#expect(throws: GatewayTestingError.timeout()) { … }`.
public struct GatewayTestingError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Code: String, Hashable, Sendable {
        case timeout
        case processFailed
        case ioFailed
        case gatewayFailed
    }

    private let code: Code
    /// Human-readable detail.
    public let detail: String
    /// Where the error was created.
    public let file: String
    /// Line where the error was created.
    public let line: Int

    private init(_ code: Code, detail: String, file: String, line: Int) {
        self.code = code
        self.detail = detail
        self.file = file
        self.line = line
    }

    /// A bounded wait ended before its condition held (a child still running, no matching output line).
    /// - Parameters:
    ///   - detail: What was being waited for.
    public static func timeout(_ detail: String = "", file: String = #fileID, line: Int = #line) -> Self {
        Self(.timeout, detail: detail, file: file, line: line)
    }

    /// Starting, signalling or waiting for a child process failed, or it ended unexpectedly.
    /// - Parameters:
    ///   - detail: What failed.
    public static func processFailed(_ detail: String = "", file: String = #fileID, line: Int = #line) -> Self {
        Self(.processFailed, detail: detail, file: file, line: line)
    }

    /// A file or directory operation failed.
    /// - Parameters:
    ///   - detail: errno text.
    public static func ioFailed(_ detail: String = "", file: String = #fileID, line: Int = #line) -> Self {
        Self(.ioFailed, detail: detail, file: file, line: line)
    }

    /// A gateway under test did not shut down cleanly (a child exited non-zero, a server reported a fatal error).
    /// - Parameters:
    ///   - detail: Exit status or fatal reason, with the tail of the gateway's stderr.
    public static func gatewayFailed(_ detail: String = "", file: String = #fileID, line: Int = #line) -> Self {
        Self(.gatewayFailed, detail: detail, file: file, line: line)
    }

    /// `true` for `timeout`.
    public var isTimeout: Bool { code == .timeout }

    /// Errors are equal when their codes are equal (detail and location are ignored).
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }

    /// Hashes the code only, consistent with `==`.
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// `GatewayTestingError.<code>: detail (file:line)`.
    public var description: String {
        let suffix = detail.isEmpty ? "" : ": \(detail)"
        return "GatewayTestingError.\(code.rawValue)\(suffix) (\(file):\(line))"
    }
}
