/// A parsed `ws://` or `wss://` URL: `ws://127.0.0.1:8080/v1/ws`, `wss://[::1]:8443/path?x=1`, `ws://localhost/`.
///
/// Parsing is strict and never traps: user info and fragments are rejected, the port must be 1…65535.
public struct WebSocketURL: Sendable, Hashable, CustomStringConvertible {
    /// `true` for `wss://`.
    public var secure: Bool
    /// Host without brackets: `127.0.0.1`, `::1`, `localhost`.
    public var host: String
    /// TCP port (defaults: 80 for ws, 443 for wss).
    public var port: Int
    /// Path plus query, always starting with `/`.
    public var path: String

    /// Creates a URL from its parts.
    /// - Parameters:
    ///   - secure: `true` for `wss://`.
    ///   - host: Host without brackets.
    ///   - port: TCP port.
    ///   - path: Request target starting with `/`.
    public init(secure: Bool, host: String, port: Int, path: String = "/") {
        self.secure = secure
        self.host = host
        self.port = port
        self.path = path.hasPrefix("/") ? path : "/" + path
    }

    /// Parses a `ws://` or `wss://` URL.
    /// - Parameters:
    ///   - string: The URL text.
    /// - Throws: `GatewayClientError.invalidURL` if the text is not a usable WebSocket URL.
    public init(parsing string: String) throws {
        let secure: Bool
        let rest: Substring
        if string.lowercased().hasPrefix("ws://") {
            secure = false
            rest = string.dropFirst(5)
        } else if string.lowercased().hasPrefix("wss://") {
            secure = true
            rest = string.dropFirst(6)
        } else {
            throw GatewayClientError.invalidURL("scheme must be ws:// or wss://")
        }
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[rest.startIndex..<authorityEnd]
        var target = String(rest[authorityEnd...])
        if target.isEmpty { target = "/" } else if target.hasPrefix("?") { target = "/" + target }
        guard !target.contains("#") else { throw GatewayClientError.invalidURL("fragments are not allowed") }
        guard !authority.contains("@") else { throw GatewayClientError.invalidURL("user info is not allowed") }
        guard !target.contains(where: { $0 == " " || $0 == "\r" || $0 == "\n" }) else {
            throw GatewayClientError.invalidURL("path contains whitespace")
        }

        let host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw GatewayClientError.invalidURL("unterminated IPv6 literal")
            }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw GatewayClientError.invalidURL("junk after IPv6 literal") }
                portText = after.dropFirst()
            }
        } else if let colon = authority.firstIndex(of: ":") {
            host = authority[authority.startIndex..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        guard !host.isEmpty else { throw GatewayClientError.invalidURL("empty host") }
        guard !host.contains(where: { $0 == " " || $0 == "/" || $0 == "[" || $0 == "]" }) else {
            throw GatewayClientError.invalidURL("bad host")
        }
        var port = secure ? 443 : 80
        if let portText {
            guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
                let value = Int(portText), (1...65535).contains(value)
            else { throw GatewayClientError.invalidURL("bad port") }
            port = value
        }
        self.init(secure: secure, host: String(host), port: port, path: target)
    }

    /// `true` if `host` is an IPv6 literal (contains a colon).
    public var isIPv6Literal: Bool { host.contains(":") }

    /// The `Host` header value: brackets around IPv6 literals, port omitted when it is the scheme default.
    public var hostHeader: String {
        let bracketed = isIPv6Literal ? "[\(host)]" : host
        let defaultPort = secure ? 443 : 80
        return port == defaultPort ? bracketed : "\(bracketed):\(port)"
    }

    /// The URL in canonical form.
    public var description: String {
        let bracketed = isIPv6Literal ? "[\(host)]" : host
        return "\(secure ? "wss" : "ws")://\(bracketed):\(port)\(path)"
    }
}
