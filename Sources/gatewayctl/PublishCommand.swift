import ArgumentParser
import Foundation
import GatewayClient
import GatewayProtocol

extension GatewayCtl {
    /// `gatewayctl publish`: one event through the HTTP API (`POST /v1/sessions/{S}/events`, protocol v1.1 §6).
    struct Publish: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish one event to a session through the gateway's HTTP API.",
            discussion: """
                Sends POST /v1/sessions/SESSION/events to the gateway's HTTP port (the URL may be http(s):// or \
                ws(s)://: same host and port) with the token as Authorization: Bearer, and prints the gateway's JSON \
                answer: {"id":I,"session":S,"seq":N} once the event is durable ("duplicate":true when this id was \
                already published by the token's sub; no seq for an ephemeral event). Re-running with the same --id \
                is safe: the gateway answers the seq of the first publish.

                Exit codes: 0 ok, 1 usage or a request the gateway refused as bad (HTTP 400, 405, 411, 413), \
                2 connection, authentication (401), rate limit (429) or storage unavailable (503), \
                3 forbidden (403) or not found (404). On failure stderr names the gateway's error code.

                Examples:
                  gatewayctl publish --url http://127.0.0.1:8080 demo --kind chat.message --data '{"text":"hi"}'
                  gatewayctl publish demo --kind progress.step --data '{"step":3}' --id build-42-step-3
                """)

        @OptionGroup var endpoint: EndpointOptions

        @Argument(help: "The session to publish to.")
        var session: String

        @Option(help: "The event kind (1-64 characters of a-z 0-9 . _ -).")
        var kind: String

        @Option(help: "The event's data: one JSON value.")
        var data: String

        @Option(help: "The publisher's id of the event, the dedupe key (default: a random id).")
        var id: String?

        @Flag(help: "Fan the event out without storing it (no seq).")
        var ephemeral = false

        func validate() throws {
            guard FieldRules.isValidSessionID(session) else {
                throw ValidationError("SESSION must be 1-128 characters of A-Z a-z 0-9 . _ : -")
            }
            guard FieldRules.isValidKind(kind) else { throw ValidationError("--kind must be 1-64 characters of a-z 0-9 . _ -") }
            if let id, !FieldRules.isValidPublisherID(id) { throw ValidationError("--id must be 1-128 printable characters") }
            guard (try? JSONSerialization.jsonObject(with: Data(data.utf8), options: [.fragmentsAllowed])) != nil else {
                throw ValidationError("--data must be one JSON value, e.g. '{\"text\":\"hi\"}'")
            }
        }

        func run() throws {
            let resolved = try endpoint.resolve(environment: ProcessInfo.processInfo.environment)
            var body: [UInt8] = Array(#"{"id":"#.utf8)
            JSONWriter.appendString(id ?? "ctl-" + UUID().uuidString.lowercased(), to: &body)
            body.append(contentsOf: Array(#","kind":"#.utf8))
            JSONWriter.appendString(kind, to: &body)
            body.append(contentsOf: Array(#","data":"#.utf8) + Array(data.utf8))
            if ephemeral { body.append(contentsOf: Array(#","ephemeral":true"#.utf8)) }
            body.append(UInt8(ascii: "}"))
            let response: (status: Int, headers: [String: String], body: [UInt8])
            do {
                response = try RawHTTP.send(
                    host: resolved.url.host, port: resolved.url.port, method: "POST",
                    path: resolved.eventsPath(session: session),
                    headers: [("Authorization", "Bearer " + resolved.token), ("Content-Type", "application/json")],
                    body: body, tls: resolved.tls, timeout: resolved.connectTimeout + .seconds(10))
            } catch {
                let scheme = resolved.url.secure ? "https" : "http"
                throw CtlError.connection(
                    "cannot reach the gateway at \(scheme)://\(resolved.url.hostHeader): \(EndpointOptions.detail(error))"
                )
            }
            guard response.status == 200 else { throw Self.failure(response.status, response.body) }
            let output = OutputSink()
            try output.writeLine(
                JSONText.singleLine(String(decoding: response.body, as: UTF8.self)).trimmingCharacters(in: .whitespaces))
            try output.flush()
        }

        /// The refusal as one line naming the gateway's error code, with its exit code.
        static func failure(_ status: Int, _ body: [UInt8]) -> CtlError {
            let error = (try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])?["error"] as? [String: Any]
            let code = TextEscaper.escape(error?["code"] as? String ?? "error", limit: 40)
            let line = "\(code) (HTTP \(status)): \(Sessions.serverMessage(body))"
            switch status {
            case 400, 405, 411, 413: return CtlError.usage(line)
            case 403, 404: return CtlError.notFound(line)
            default: return CtlError.connection(line)
            }
        }
    }
}
