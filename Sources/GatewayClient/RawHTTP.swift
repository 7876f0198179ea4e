/// One-shot HTTP/1.1 exchanges over a fresh connection: `/healthz`, `/metrics`, and hostile handshakes
/// (h2c upgrades, broken headers) that `WebSocketClient` would refuse to send.
public enum RawHTTP {
    /// Sends `raw` exactly as given and reads one response.
    ///
    /// The body is read by `Content-Length`, chunked encoding, or until the server closes; a 101 response returns
    /// immediately with any bytes that followed the head as its body.
    /// - Parameters:
    ///   - host: IPv4/IPv6 literal (no brackets) or name.
    ///   - port: TCP port.
    ///   - raw: The complete request text, including the final blank line (`"GET / HTTP/1.1\r\nHost: x\r\n\r\n"`).
    ///   - tls: TLS settings, or `nil` for plain TCP.
    ///   - maxBodySize: Largest body accepted (default 64 MiB).
    ///   - timeout: Bound for connect, request and response together.
    /// - Returns: Status, headers (names lowercased, repeats joined with ", "), and body.
    /// - Throws: `.timeout`, `.closed` if the server hung up before a complete response, `.connectFailed`,
    ///   `.tlsFailed`, `.protocolViolation` for an unparsable response.
    public static func request(
        host: String, port: Int, raw: String, tls: TLSOptions? = nil, maxBodySize: Int = 64 * 1024 * 1024,
        timeout: Duration = .seconds(5)
    ) throws -> (status: Int, headers: [String: String], body: [UInt8]) {
        try request(host: host, port: port, rawBytes: Array(raw.utf8), tls: tls, maxBodySize: maxBodySize, timeout: timeout)
    }

    /// Sends arbitrary bytes (for example invalid UTF-8 in a header) and reads one response.
    /// - Parameters:
    ///   - host: IPv4/IPv6 literal (no brackets) or name.
    ///   - port: TCP port.
    ///   - rawBytes: The complete request bytes.
    ///   - tls: TLS settings, or `nil` for plain TCP.
    ///   - maxBodySize: Largest body accepted.
    ///   - timeout: Bound for the whole exchange.
    /// - Returns: Status, lowercased headers, and body.
    /// - Throws: As `request(host:port:raw:tls:maxBodySize:timeout:)`.
    public static func request(
        host: String, port: Int, rawBytes: [UInt8], tls: TLSOptions? = nil, maxBodySize: Int = 64 * 1024 * 1024,
        timeout: Duration = .seconds(5)
    ) throws -> (status: Int, headers: [String: String], body: [UInt8]) {
        let deadline = Deadline.after(timeout)
        let stream = try WebSocketClient.openStream(host: host, port: port, tls: tls, deadline: deadline)
        defer { stream.release() }
        try stream.write(rawBytes, deadline: deadline)
        var reader = HTTPResponseReader(maxBodyBytes: maxBodySize)
        let head = try reader.readHead(from: stream, deadline: deadline)
        if head.status == 101 { return (head.status, head.headers, reader.buffer) }
        let isHead = rawBytes.starts(with: Array("HEAD ".utf8))
        let (body, complete) = try reader.readBody(for: head, from: stream, isHeadRequest: isHead, deadline: deadline)
        guard complete else {
            throw GatewayClientError.closed(detail: "connection closed after \(body.count) body bytes")
        }
        return (head.status, head.headers, body)
    }

    /// `GET path` with `Host` and `Connection: close`, plus extra headers.
    /// - Parameters:
    ///   - host: IPv4/IPv6 literal (no brackets) or name.
    ///   - port: TCP port.
    ///   - path: Request target, for example `/healthz`.
    ///   - headers: Extra header fields.
    ///   - tls: TLS settings, or `nil` for plain TCP.
    ///   - timeout: Bound for the whole exchange.
    /// - Returns: Status, lowercased headers, and body.
    /// - Throws: As `request(host:port:raw:tls:maxBodySize:timeout:)`.
    public static func get(
        host: String, port: Int, path: String, headers: [(String, String)] = [], tls: TLSOptions? = nil,
        timeout: Duration = .seconds(5)
    ) throws -> (status: Int, headers: [String: String], body: [UInt8]) {
        try send(host: host, port: port, method: "GET", path: path, headers: headers, tls: tls, timeout: timeout)
    }

    /// `method path` with `Host`, `Connection: close` and extra headers, plus `Content-Length` and the body if one
    /// is given (`POST /v1/sessions/{S}/events` of the HTTP API).
    /// - Parameters:
    ///   - host: IPv4/IPv6 literal (no brackets) or name.
    ///   - port: TCP port.
    ///   - method: The request method, for example `POST`.
    ///   - path: Request target.
    ///   - headers: Extra header fields.
    ///   - body: The request body, or `nil` for none (no `Content-Length`).
    ///   - tls: TLS settings, or `nil` for plain TCP.
    ///   - timeout: Bound for the whole exchange.
    /// - Returns: Status, lowercased headers, and body.
    /// - Throws: As `request(host:port:raw:tls:maxBodySize:timeout:)`.
    public static func send(
        host: String, port: Int, method: String, path: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
        tls: TLSOptions? = nil, timeout: Duration = .seconds(5)
    ) throws -> (status: Int, headers: [String: String], body: [UInt8]) {
        let hostHeader = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        var raw = "\(method) \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\nConnection: close\r\n"
        for (name, value) in headers { raw += "\(name): \(value)\r\n" }
        if let body { raw += "Content-Length: \(body.count)\r\n" }
        raw += "\r\n"
        return try request(host: host, port: port, rawBytes: Array(raw.utf8) + (body ?? []), tls: tls, timeout: timeout)
    }
}
