import GatewayProtocol
import ArgumentParser
import Foundation
import GatewayClient

/// Where the gateway is and how to authenticate: shared by `tail`, `sessions` and `publish`.
struct EndpointOptions: ParsableArguments {
    /// The default WebSocket URL when neither `--url` nor `GATEWAY_URL` is set.
    static let defaultURL = "ws://127.0.0.1:8080/v1/ws"

    @Option(
        help:
            "Gateway URL, ws(s):// or http(s):// (default: $GATEWAY_URL, else \(EndpointOptions.defaultURL))."
    )
    var url: String?

    @Option(
        help:
            "Token: an operator's for tail and sessions (default: $GATEWAY_TOKEN). Arguments are visible in ps; prefer the variable or --token-file."
    )
    var token: String?

    @Option(name: .customLong("token-file"), help: "Read the token from this file (first line).")
    var tokenFile: String?

    @Option(name: .customLong("ca-file"), help: "PEM file of the CA (or self-signed certificate) to trust for wss://.")
    var caFile: String?

    @Option(name: .customLong("connect-timeout"), help: "Seconds allowed for connect, TLS and the upgrade (1-120).")
    var connectTimeout: Int = 5

    /// The resolved endpoint.
    struct Resolved: Sendable {
        /// The WebSocket URL.
        var url: WebSocketURL
        /// The URL as given.
        var urlText: String
        /// The bearer token.
        var token: String
        /// TLS settings (`nil` for `ws://`).
        var tls: TLSOptions?
        /// Bound for connect + upgrade.
        var connectTimeout: Duration
    }

    /// Checks flags that need no I/O.
    func validate() throws {
        guard (1...120).contains(connectTimeout) else {
            throw ValidationError("--connect-timeout must be 1-120 seconds")
        }
    }

    /// Resolves flags and environment into an endpoint.
    /// - Parameters:
    ///   - environment: The process environment.
    /// - Returns: The endpoint.
    /// - Throws: ``CtlError`` (exit 1) for a bad URL, a missing token or an unreadable file.
    func resolve(environment: [String: String]) throws(CtlError) -> Resolved {
        let text = url ?? environment["GATEWAY_URL"].flatMap { $0.isEmpty ? nil : $0 } ?? Self.defaultURL
        let parsed: WebSocketURL
        do {
            parsed = try WebSocketURL(parsing: Self.webSocketScheme(text))
        } catch {
            throw CtlError.usage("invalid gateway URL \(TextEscaper.escape(text, limit: 200)): \(Self.detail(error))")
        }
        var tokenText: String
        if let token {
            tokenText = token
        } else if let tokenFile {
            guard let data = FileManager.default.contents(atPath: tokenFile) else {
                throw CtlError.usage("cannot read --token-file \(TextEscaper.escape(tokenFile))")
            }
            tokenText =
                String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        } else {
            tokenText = environment["GATEWAY_TOKEN"] ?? ""
        }
        tokenText = tokenText.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !tokenText.isEmpty else {
            throw CtlError.usage(
                "no token: pass --token or --token-file, or set GATEWAY_TOKEN (see `gatewayctl token mint`)")
        }
        guard tokenText.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw CtlError.usage("the token contains spaces or control characters")
        }
        var tls: TLSOptions?
        if let caFile {
            guard parsed.secure else { throw CtlError.usage("--ca-file needs a wss:// URL") }
            guard FileManager.default.isReadableFile(atPath: caFile) else {
                throw CtlError.usage("cannot read --ca-file \(TextEscaper.escape(caFile))")
            }
            tls = .verifying(caFile: caFile)
        } else if parsed.secure {
            tls = TLSOptions()
        }
        return Resolved(
            url: parsed, urlText: parsed.description, token: tokenText, tls: tls,
            connectTimeout: .seconds(connectTimeout))
    }

    /// The gateway's HTTP URL as a WebSocket one (same host and port): `http://` → `ws://`, `https://` → `wss://`.
    static func webSocketScheme(_ text: String) -> String {
        let lower = text.lowercased()
        if lower.hasPrefix("http://") { return "ws://" + text.dropFirst("http://".count) }
        if lower.hasPrefix("https://") { return "wss://" + text.dropFirst("https://".count) }
        return text
    }

    /// The detail of a client library error, without source locations.
    static func detail(_ error: any Error) -> String {
        if let e = error as? GatewayClientError {
            return TextEscaper.escape(e.detail.isEmpty ? "\(e)" : e.detail, limit: 300)
        }
        return TextEscaper.escape("\(error)", limit: 300)
    }
}

extension EndpointOptions.Resolved {
    /// The HTTP path of the operators' session listing next to the WebSocket path: `…/v1/ws` → `…/v1/sessions`.
    var sessionsPath: String { apiPrefix + "/v1/sessions" }

    /// The HTTP API path of a session's events (`POST`/`GET /v1/sessions/{S}/events`, protocol v1.1 §6).
    func eventsPath(session: String) -> String { apiPrefix + "/v1/sessions/" + session + "/events" }

    /// What comes before `/v1/ws` in the URL's path (usually nothing): the HTTP paths sit next to it.
    private var apiPrefix: String {
        var path = url.path
        if let query = path.firstIndex(of: "?") { path = String(path[..<query]) }
        return path.hasSuffix("/v1/ws") ? String(path.dropLast("/v1/ws".count)) : ""
    }
}
