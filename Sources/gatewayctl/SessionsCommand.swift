import GatewayProtocol
import ArgumentParser
import Foundation
import GatewayClient

extension GatewayCtl {
    /// `gatewayctl sessions`: the gateway's live sessions (`GET /v1/sessions`).
    struct Sessions: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List a running gateway's live sessions: subscribers by role, head seq, last event time.",
            discussion: """
                Calls GET /v1/sessions on the gateway's HTTP port (derived from the WebSocket URL: ws → http, \
                wss → https, same host and port) with the operator token as Authorization: Bearer. A session is \
                live while at least one connection has joined it.

                Exit codes: 0 ok, 1 usage, 2 connection or authentication (HTTP 401), 3 token is not an operator's (403).

                Examples:
                  gatewayctl sessions
                  gatewayctl sessions --json | jq -r '.sessions[].session'
                """)

        @Flag(help: "Print the gateway's JSON answer as it is.")
        var json = false

        @OptionGroup var endpoint: EndpointOptions

        func run() throws {
            let resolved = try endpoint.resolve(environment: ProcessInfo.processInfo.environment)
            let output = OutputSink()
            let response: (status: Int, headers: [String: String], body: [UInt8])
            do {
                response = try RawHTTP.get(
                    host: resolved.url.host, port: resolved.url.port, path: resolved.sessionsPath,
                    headers: [("Authorization", "Bearer " + resolved.token)], tls: resolved.tls,
                    timeout: resolved.connectTimeout + .seconds(5))
            } catch {
                let scheme = resolved.url.secure ? "https" : "http"
                throw CtlError.connection(
                    "cannot reach the gateway at \(scheme)://\(resolved.url.hostHeader): \(EndpointOptions.detail(error))"
                )
            }
            guard response.status == 200 else {
                let message = Self.serverMessage(response.body)
                switch response.status {
                case 401: throw CtlError.connection("authentication failed (HTTP 401): \(message)")
                case 403: throw CtlError.notFound("forbidden (HTTP 403): \(message)")
                case 404:
                    throw CtlError.notFound("HTTP 404 at \(resolved.sessionsPath): this gateway has no session listing")
                default: throw CtlError.connection("the gateway answered HTTP \(response.status): \(message)")
                }
            }
            guard let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
                let sessions = object["sessions"] as? [[String: Any]]
            else {
                throw CtlError.connection("the gateway's session listing is not the expected JSON")
            }
            if json {
                try output.writeLine(
                    JSONText.singleLine(String(decoding: response.body, as: UTF8.self)).trimmingCharacters(
                        in: .whitespaces))
                return try output.flush()
            }
            var rows: [[String]] = [["SESSION", "USERS", "AGENTS", "OPERATORS", "HEAD", "LAST EVENT"]]
            for s in sessions {
                let subscribers = s["subscribers"] as? [String: Any] ?? [:]
                func count(_ key: String) -> String { (subscribers[key] as? NSNumber).map { "\($0.intValue)" } ?? "0" }
                let last =
                    (s["last_event_ts"] as? String).map { ts in
                        RFC3339.parse(ts).map(Timestamps.localDateTime) ?? TextEscaper.escape(ts, limit: 40)
                    } ?? "-"
                rows.append([
                    TextEscaper.escape(s["session"] as? String ?? "?", limit: 128), count("user"), count("agent"),
                    count("operator"), (s["head"] as? NSNumber).map { "\($0.uint64Value)" } ?? "0", last,
                ])
            }
            for line in Table.render(rows, rightAligned: [1, 2, 3, 4]) { try output.writeLine(line) }
            let epoch = TextEscaper.escape(object["epoch"] as? String ?? "", limit: 64)
            try output.writeLine("\(sessions.count) live session(s); log epoch \(epoch)")
            try output.flush()
        }

        /// The `message` of the gateway's JSON error body (`{"error":{"code":C,"message":M}}`), or its first line,
        /// escaped.
        static func serverMessage(_ body: [UInt8]) -> String {
            if let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
                let error = object["error"] as? [String: Any], let message = error["message"] as? String
            {
                return TextEscaper.escape(message, limit: 200)
            }
            let first =
                String(decoding: body, as: UTF8.self).split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
            return TextEscaper.escape(first, limit: 200)
        }
    }
}

/// Plain-text tables with aligned columns.
enum Table {
    /// Renders rows (the first is the header) with two spaces between columns.
    /// - Parameters:
    ///   - rows: Cells, already escaped.
    ///   - rightAligned: Column indexes to align right (numbers).
    /// - Returns: One string per row, trailing spaces removed.
    static func render(_ rows: [[String]], rightAligned: Set<Int> = []) -> [String] {
        let columns = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in rows {
            for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
        }
        return rows.map { row in
            var line = ""
            for (i, cell) in row.enumerated() {
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                if i > 0 { line += "  " }
                line += rightAligned.contains(i) ? pad + cell : cell + pad
            }
            while line.hasSuffix(" ") { line.removeLast() }
            return line
        }
    }
}
