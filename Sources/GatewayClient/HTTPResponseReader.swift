/// Reads one HTTP/1.x response from a `SocketStream`: the head (bounded), then the body by
/// `Content-Length`, chunked encoding, or until EOF. Shared by the WebSocket upgrade and `RawHTTP`.
struct HTTPResponseReader {
    /// A parsed status line and header block.
    struct Head: Sendable {
        /// Status code, for example 101 or 401.
        var status: Int
        /// Header fields with lowercased names; repeated fields are joined with ", ".
        var headers: [String: String]
    }

    /// Largest accepted response head (status line plus headers).
    var maxHeadBytes = 64 * 1024
    /// Largest accepted body.
    var maxBodyBytes = 64 * 1024 * 1024
    /// Bytes read from the stream but not yet consumed (for example frames that followed a 101).
    var buffer: [UInt8] = []

    /// Reads up to the blank line and parses the head.
    /// - Parameters:
    ///   - stream: Connected stream.
    ///   - deadline: Deadline for the whole head.
    /// - Throws: `.timeout`, `.closed` (EOF before a complete head), `.protocolViolation` (oversized or malformed).
    mutating func readHead(from stream: SocketStream, deadline: ContinuousClock.Instant) throws -> Head {
        var searchFrom = 0
        while true {
            if let end = Self.findHeadEnd(buffer, from: searchFrom) {
                let headBytes = Array(buffer[0..<end.headLength])
                buffer.removeFirst(end.headLength + end.separatorLength)
                return try Self.parseHead(headBytes)
            }
            searchFrom = max(0, buffer.count - 3)
            guard buffer.count <= maxHeadBytes else {
                throw GatewayClientError.protocolViolation("response head larger than \(maxHeadBytes) bytes")
            }
            let n = try stream.read(into: &buffer, maxBytes: 16 * 1024, deadline: deadline)
            if n == 0 {
                throw GatewayClientError.closed(
                    detail: buffer.isEmpty ? "connection closed before a response" : "connection closed inside the response head"
                )
            }
        }
    }

    /// Reads the body that belongs to `head`.
    /// - Parameters:
    ///   - head: The parsed head.
    ///   - stream: Connected stream.
    ///   - isHeadRequest: `true` if the request was HEAD (no body).
    ///   - deadline: Deadline for the body.
    /// - Returns: The body and whether it is complete (`false` if the peer closed early).
    /// - Throws: `.timeout`, `.frameTooLarge` (body over the limit), `.protocolViolation` (bad chunking).
    mutating func readBody(
        for head: Head, from stream: SocketStream, isHeadRequest: Bool = false, deadline: ContinuousClock.Instant
    ) throws -> (body: [UInt8], complete: Bool) {
        if isHeadRequest || (100..<200).contains(head.status) || head.status == 204 || head.status == 304 {
            return ([], true)
        }
        if let encoding = head.headers["transfer-encoding"], encoding.lowercased().contains("chunked") {
            return try readChunked(from: stream, deadline: deadline)
        }
        if let lengthText = head.headers["content-length"] {
            guard let length = Int(lengthText.trimmingASCIISpaces()), length >= 0 else {
                throw GatewayClientError.protocolViolation("bad Content-Length")
            }
            guard length <= maxBodyBytes else {
                throw GatewayClientError.frameTooLarge("body \(length) > limit \(maxBodyBytes)")
            }
            while buffer.count < length {
                if try stream.read(into: &buffer, maxBytes: min(length - buffer.count, 256 * 1024), deadline: deadline) == 0 {
                    let body = buffer
                    buffer.removeAll()
                    return (body, false)
                }
            }
            let body = Array(buffer[0..<length])
            buffer.removeFirst(length)
            return (body, true)
        }
        // Close-delimited body.
        while true {
            guard buffer.count <= maxBodyBytes else {
                throw GatewayClientError.frameTooLarge("body larger than \(maxBodyBytes)")
            }
            if try stream.read(into: &buffer, maxBytes: 256 * 1024, deadline: deadline) == 0 {
                let body = buffer
                buffer.removeAll()
                return (body, true)
            }
        }
    }

    private mutating func readChunked(from stream: SocketStream, deadline: ContinuousClock.Instant) throws -> (
        body: [UInt8], complete: Bool
    ) {
        var body: [UInt8] = []
        while true {
            guard let sizeLine = try readLine(from: stream, deadline: deadline) else { return (body, false) }
            let sizeText = String(decoding: sizeLine, as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingASCIISpaces(), radix: 16), size >= 0 else {
                throw GatewayClientError.protocolViolation("bad chunk size")
            }
            guard size <= maxBodyBytes - body.count else {  // no overflow: size may be near Int.max
                throw GatewayClientError.frameTooLarge("chunked body larger than \(maxBodyBytes)")
            }
            if size == 0 {
                // Trailers until the empty line.
                while let line = try readLine(from: stream, deadline: deadline), !line.isEmpty {}
                return (body, true)
            }
            while buffer.count < size + 2 {
                if try stream.read(into: &buffer, maxBytes: 256 * 1024, deadline: deadline) == 0 {
                    body.append(contentsOf: buffer.prefix(size))
                    buffer.removeAll()
                    return (body, false)
                }
            }
            body.append(contentsOf: buffer[0..<size])
            buffer.removeFirst(size + 2)
        }
    }

    /// One CRLF- (or LF-) terminated line without the terminator; `nil` on EOF.
    private mutating func readLine(from stream: SocketStream, deadline: ContinuousClock.Instant) throws -> [UInt8]? {
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                var line = Array(buffer[0..<newline])
                buffer.removeFirst(newline + 1)
                if line.last == 0x0D { line.removeLast() }
                return line
            }
            guard buffer.count <= maxHeadBytes else { throw GatewayClientError.protocolViolation("line too long") }
            if try stream.read(into: &buffer, maxBytes: 16 * 1024, deadline: deadline) == 0 { return nil }
        }
    }

    /// Position of the head terminator (`\r\n\r\n`, or a bare `\n\n`).
    static func findHeadEnd(_ bytes: [UInt8], from start: Int) -> (headLength: Int, separatorLength: Int)? {
        var i = max(0, start)
        while i < bytes.count {
            if bytes[i] == 0x0A {
                if i + 1 < bytes.count, bytes[i + 1] == 0x0A { return (i, 2) }
                if i + 2 < bytes.count, bytes[i + 1] == 0x0D, bytes[i + 2] == 0x0A {
                    let cr = i > 0 && bytes[i - 1] == 0x0D
                    return cr ? (i - 1, 4) : (i, 3)
                }
            }
            i += 1
        }
        return nil
    }

    /// Parses `HTTP/1.1 101 Switching Protocols` plus header lines.
    /// - Throws: `.protocolViolation` for a malformed status line.
    static func parseHead(_ bytes: [UInt8]) throws -> Head {
        // Split on bytes: in Swift "\r\n" is one Character, so splitting the String on "\n" would not work.
        var lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false).map { line -> Substring in
            let trimmed = line.last == 0x0D ? line.dropLast() : line
            return Substring(String(decoding: trimmed, as: UTF8.self))
        }
        guard !lines.isEmpty else { throw GatewayClientError.protocolViolation("empty response") }
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), parts[1].count == 3,
            let status = Int(parts[1]), (100...999).contains(status)
        else { throw GatewayClientError.protocolViolation("bad status line: \(statusLine.prefix(80))") }
        var headers: [String: String] = [:]
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[line.startIndex..<colon].trimmingASCIISpaces().lowercased()
            let value = line[line.index(after: colon)...].trimmingASCIISpaces()
            if let existing = headers[name] {
                headers[name] = existing + ", " + value
            } else {
                headers[name] = value
            }
        }
        return Head(status: status, headers: headers)
    }
}

extension StringProtocol {
    /// The text without leading and trailing spaces and tabs (no Foundation needed).
    func trimmingASCIISpaces() -> String {
        let text = String(self)
        guard let first = text.firstIndex(where: { $0 != " " && $0 != "\t" }),
            let last = text.lastIndex(where: { $0 != " " && $0 != "\t" })
        else { return "" }
        return String(text[first...last])
    }
}
