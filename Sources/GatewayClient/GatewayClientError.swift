/// The one public error type of `GatewayClient`, the WebSocket client library (house rule 2, after `ServiceGroupError`).
///
/// Errors compare equal when their codes match, so tests can write
/// `#expect(throws: GatewayClientError.timeout()) { … }`; the payload (HTTP status, close code, detail)
/// is available through the accessors, for example `error.httpStatus == 401`.
public struct GatewayClientError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Code: String, Hashable, Sendable {
        case timeout
        case closed
        case handshakeFailed
        case protocolViolation
        case frameTooLarge
        case invalidURL
        case connectFailed
        case tlsFailed
        case ioFailed
        case invalidArgument
        case unexpectedMessage
    }

    private let code: Code
    /// HTTP status of a rejected upgrade (`handshakeFailed`); otherwise `nil`.
    public let httpStatus: Int?
    /// Response headers of a rejected upgrade, keys lowercased; otherwise empty.
    public let httpHeaders: [String: String]
    /// Response body of a rejected upgrade (bounded); otherwise empty.
    public let httpBody: [UInt8]
    /// Close code the server sent before the connection ended (`closed`), if a close frame arrived.
    public let closeCode: UInt16?
    /// Close reason the server sent (`closed`), or "".
    public let closeReason: String
    /// Human-readable detail (never contains message bodies).
    public let detail: String
    /// Where the error was created.
    public let file: String
    /// Line where the error was created.
    public let line: Int

    private init(
        _ code: Code, detail: String, httpStatus: Int? = nil, httpHeaders: [String: String] = [:],
        httpBody: [UInt8] = [], closeCode: UInt16? = nil, closeReason: String = "", file: String, line: Int
    ) {
        self.code = code
        self.detail = detail
        self.httpStatus = httpStatus
        self.httpHeaders = httpHeaders
        self.httpBody = httpBody
        self.closeCode = closeCode
        self.closeReason = closeReason
        self.file = file
        self.line = line
    }

    /// Nothing complete arrived (or could be written) before the deadline; the connection is still usable
    /// after a receive timeout (partial data stays buffered).
    /// - Parameters:
    ///   - detail: What was being waited for.
    public static func timeout(_ detail: String = "", file: String = #fileID, line: Int = #line) -> Self {
        Self(.timeout, detail: detail, file: file, line: line)
    }

    /// The connection has ended: a close frame arrived earlier (`closeCode`), the peer closed TCP, or `close()` ran.
    /// - Parameters:
    ///   - code: Close code from the server's close frame, if any.
    ///   - reason: Close reason from the server's close frame.
    ///   - detail: How the connection ended.
    public static func closed(
        code: UInt16? = nil, reason: String = "", detail: String = "", file: String = #fileID, line: Int = #line
    ) -> Self {
        Self(.closed, detail: detail, closeCode: code, closeReason: reason, file: file, line: line)
    }

    /// The server answered the upgrade with something other than a valid 101.
    /// - Parameters:
    ///   - status: HTTP status code (101 if the 101 itself was invalid, for example a wrong `Sec-WebSocket-Accept`).
    ///   - headers: Response headers, keys lowercased.
    ///   - body: Response body (bounded).
    public static func handshakeFailed(
        status: Int? = nil, headers: [String: String] = [:], body: [UInt8] = [], detail: String = "",
        file: String = #fileID, line: Int = #line
    ) -> Self {
        Self(.handshakeFailed, detail: detail, httpStatus: status, httpHeaders: headers, httpBody: body,
             file: file, line: line)
    }

    /// The server sent bytes that break RFC 6455 (masked frame, bad opcode, bad UTF-8, …); the connection is failed.
    /// - Parameters:
    ///   - detail: Which rule was broken.
    public static func protocolViolation(_ detail: String = "", file: String = #fileID, line: Int = #line) -> Self {
        Self(.protocolViolation, detail: detail, file: file, line: line)
    }

    /// A frame or reassembled message exceeded the configured maximum; the connection is failed.
    /// - Parameters:
    ///   - detail: Sizes involved.
    public static func frameTooLarge(_ detail: String = "", file: String = #fileID, line: Int = #line) -> Self {
        Self(.frameTooLarge, detail: detail, file: file, line: line)
    }

    /// A `ws://` / `wss://` URL could not be parsed.
    /// - Parameters:
    ///   - detail: What was wrong.
    public static func invalidURL(_ detail: String = "", file: String = #fileID, line: Int = #line) -> Self {
        Self(.invalidURL, detail: detail, file: file, line: line)
    }

    /// TCP connect (or name resolution) failed.
    /// - Parameters:
    ///   - detail: errno text or resolver message.
    public static func connectFailed(_ detail: String = "", file: String = #fileID, line: Int = #line) -> Self {
        Self(.connectFailed, detail: detail, file: file, line: line)
    }

    /// The TLS handshake or a TLS read/write failed (includes certificate verification failures).
    /// - Parameters:
    ///   - detail: OpenSSL error text.
    public static func tlsFailed(_ detail: String = "", file: String = #fileID, line: Int = #line) -> Self {
        Self(.tlsFailed, detail: detail, file: file, line: line)
    }

    /// A socket or file operation failed.
    /// - Parameters:
    ///   - detail: errno text.
    public static func ioFailed(_ detail: String = "", file: String = #fileID, line: Int = #line) -> Self {
        Self(.ioFailed, detail: detail, file: file, line: line)
    }

    /// An argument passed by the test was unusable (for example a fragment size of 0).
    /// - Parameters:
    ///   - detail: Which argument.
    public static func invalidArgument(_ detail: String = "", file: String = #fileID, line: Int = #line) -> Self {
        Self(.invalidArgument, detail: detail, file: file, line: line)
    }

    /// A message arrived that the caller did not ask for (for example a ping where `receiveJSON` wanted text).
    /// - Parameters:
    ///   - detail: What arrived instead (kind and size, never the body).
    public static func unexpectedMessage(_ detail: String = "", file: String = #fileID, line: Int = #line) -> Self {
        Self(.unexpectedMessage, detail: detail, file: file, line: line)
    }

    /// `true` for `timeout`.
    public var isTimeout: Bool { code == .timeout }
    /// `true` for `closed`.
    public var isClosed: Bool { code == .closed }
    /// `true` for `handshakeFailed`.
    public var isHandshakeFailure: Bool { code == .handshakeFailed }
    /// `true` for `protocolViolation` and `frameTooLarge`.
    public var isProtocolViolation: Bool { code == .protocolViolation || code == .frameTooLarge }
    /// `true` for `tlsFailed`.
    public var isTLSFailure: Bool { code == .tlsFailed }
    /// The response body decoded as UTF-8 (lossy), for `handshakeFailed`.
    public var httpBodyString: String { String(decoding: httpBody, as: UTF8.self) }

    /// Errors are equal when their codes are equal (payload and location are ignored).
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }

    /// Hashes the code only, consistent with `==`.
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// `GatewayClientError.<code>(status: …, close: …): detail (file:line)`.
    public var description: String {
        var parts: [String] = []
        if let httpStatus { parts.append("status: \(httpStatus)") }
        if let closeCode { parts.append("close: \(closeCode)") }
        if !closeReason.isEmpty { parts.append("reason: \(closeReason)") }
        let payload = parts.isEmpty ? "" : "(" + parts.joined(separator: ", ") + ")"
        let suffix = detail.isEmpty ? "" : ": \(detail)"
        return "GatewayClientError.\(code.rawValue)\(payload)\(suffix) (\(file):\(line))"
    }
}
