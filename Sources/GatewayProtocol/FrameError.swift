/// The error codes of `{"type":"error","code":C,...}` frames (protocol-v1.md, "Frames from the gateway").
///
/// The raw values are the wire spellings. This is a plain enum, not a struct of static values, because the contract
/// fixes the set and callers (GatewayCore) are expected to switch over it exhaustively.
public enum ErrorCode: String, Sendable, Equatable, Hashable, CaseIterable {
    /// Malformed JSON or fields.
    case badRequest = "bad_request"
    /// Not authenticated (missing, invalid or expired token).
    case unauthorized = "unauthorized"
    /// Session or action not allowed for this token.
    case forbidden = "forbidden"
    /// The thing named does not exist (for example `leave` of a session not joined).
    case notFound = "not_found"
    /// Over the rate limit.
    case rateLimited = "rate_limited"
    /// A message or field over its size limit.
    case tooLarge = "too_large"
    /// Storage refused the write: the event was not stored.
    case unavailable = "unavailable"
}

/// A refused client frame: what the gateway sends back as an `error` frame.
///
/// It records where it was raised (`#fileID`, `#line`) for the log; that location never goes on the wire and is not
/// part of equality.
public struct FrameError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The wire error code.
    public var code: ErrorCode
    /// A short, client-safe explanation (it names the offending field; it never quotes tokens or message bodies).
    public var message: String
    /// The refused frame's `id`, when it could be read and is a valid id, so the error frame can echo it as `ref`.
    public var ref: String?
    /// The source file that raised the error (for logs only).
    public let fileID: StaticString
    /// The source line that raised the error (for logs only).
    public let line: Int

    /// Creates an error.
    /// - Parameters:
    ///   - code: The wire error code.
    ///   - message: A short, client-safe explanation.
    ///   - ref: The refused frame's id, if known.
    ///   - fileID: Where the error was raised (defaults to the caller).
    ///   - line: Where the error was raised (defaults to the caller).
    public init(
        _ code: ErrorCode,
        _ message: String,
        ref: String? = nil,
        fileID: StaticString = #fileID,
        line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.ref = ref
        self.fileID = fileID
        self.line = line
    }

    /// Compares code, message and ref; the source location is deliberately ignored.
    public static func == (lhs: FrameError, rhs: FrameError) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message && lhs.ref == rhs.ref
    }

    /// `code: message` plus the source location, for logs.
    public var description: String {
        "\(code.rawValue): \(message) (\(fileID):\(line))"
    }

    /// The `error` frame for this error (a convenience over ``ServerFrame/error(code:message:ref:)``).
    public var serverFrame: ServerFrame {
        .error(code: code, message: message, ref: ref)
    }
}
