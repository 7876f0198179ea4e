import ArgumentParser
import Foundation
import Logging

extension GatewayCtl {
    /// `gatewayctl tail`: replay a session and (with `--follow`) print its live events.
    struct Tail: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a session's events from a running gateway; with --follow, keep printing live events.",
            discussion: """
                Connects as an operator (Authorization: Bearer, then hello), joins SESSION and prints one line per \
                event: local time, #seq, role/sub, kind, and the chat text (data.text) or a compact summary of data. \
                Control characters and escape sequences in event data are shown escaped (\\x1b, \\n), never raw. \
                Ephemeral events (deltas) have no seq, show "~" and are dimmed (only with --follow).

                Start: --since N replays events after seq N (default 0: every event still held); --last N replays \
                the last N. Without --follow the command prints the replay up to the head and exits 0. With --follow \
                it keeps printing until SIGINT/SIGTERM (exit 0) and resumes by itself after a dropped connection \
                (jittered backoff 0.25 s to 10 s), re-joining after the last seq it saw: no gap, no duplicate.

                --json prints each event frame exactly as the gateway sent it, one JSON object per line (for jq).

                --presence joins with presence (protocol v1.1): prints who is in the session when joined, then a \
                line when a subject's first connection joins or its last one leaves ("+ user/alice joined", \
                "- user/alice left"; with --json the presence frames as sent).

                Exit codes: 0 ok, 1 usage, 2 connection or authentication, 3 forbidden or no such session.

                Examples:
                  gatewayctl token mint --role operator --sub ops --ttl 8h > ops.jwt
                  export GATEWAY_TOKEN=$(cat ops.jwt)   # or: --token-file ops.jwt
                  gatewayctl tail demo                       # the whole transcript, then exit
                  gatewayctl tail demo --last 20 --follow    # the last 20 events, then live
                  gatewayctl tail demo -f --kind 'chat.*' --hide-deltas
                  gatewayctl tail demo -f --presence         # also who comes and goes
                  gatewayctl tail demo --json | jq -r '.data.text // empty'
                  gatewayctl tail demo -f --url wss://gw:8443/v1/ws --ca-file ca.pem
                """)

        @Argument(help: "Session id.")
        var session: String

        @Option(help: "Replay the events after this seq (default 0: everything still held).")
        var since: UInt64?

        @Option(help: "Replay only the last N events (0: none, only live events with --follow).")
        var last: UInt64?

        @Flag(name: [.short, .long], help: "Keep printing live events until interrupted; reconnect after drops.")
        var follow = false

        @Option(
            name: .customLong("kind"),
            help: "Show only this kind (repeatable; a trailing * matches a prefix: 'chat.*').")
        var kinds: [String] = []

        @Flag(help: "Print each event frame as received, one JSON object per line.")
        var json = false

        @Flag(name: .customLong("hide-deltas"), help: "Leave out ephemeral events (deltas, no seq).")
        var hideDeltas = false

        @Flag(help: "Also print presence: who is in the session, and who joins or leaves (protocol v1.1).")
        var presence = false

        @Option(help: "Colour: auto (when stdout is a terminal), always, never.")
        var color: ColorMode = .auto

        @Option(
            name: .customLong("max-reconnects"),
            help: "Reconnect attempts in a row before giving up (default: unlimited with --follow, 3 without).")
        var maxReconnects: Int?

        @OptionGroup var endpoint: EndpointOptions

        func validate() throws {
            if since != nil && last != nil { throw ValidationError("--since and --last cannot be combined") }
            guard SessionID.isValid(session) else {
                throw ValidationError("session ids are 1-128 characters of A-Z a-z 0-9 . _ : -")
            }
            if let maxReconnects, maxReconnects < 0 { throw ValidationError("--max-reconnects must be 0 or more") }
            for kind in kinds where kind.isEmpty || kind.count > 65 {
                throw ValidationError("--kind must be 1-64 characters (plus an optional trailing *)")
            }
        }

        func run() throws {
            let environment = ProcessInfo.processInfo.environment
            let resolved = try endpoint.resolve(environment: environment)
            let output = OutputSink()
            let start: TailSettings.Start = last.map { .last($0) } ?? .since(since ?? 0)
            let settings = TailSettings(
                session: session, start: start, follow: follow, maxReconnects: maxReconnects ?? (follow ? nil : 3),
                json: json, hideDeltas: hideDeltas, kinds: KindFilter(patterns: kinds), presence: presence)
            StopSignals.install()
            let runner = TailRunner(
                endpoint: resolved, settings: settings, output: output,
                formatter: EventFormatter(color: color.enabled(for: output, environment: environment)),
                logger: Logger(label: "gatewayctl.tail"))
            try runner.run()
        }
    }
}

/// The protocol's session id rule (protocol-v1.md, "Rules and limits").
enum SessionID {
    /// 1-128 characters of `A-Z a-z 0-9 . _ : -`.
    /// - Parameters:
    ///   - id: A candidate id.
    /// - Returns: Whether the gateway would accept it.
    static func isValid(_ id: String) -> Bool {
        let bytes = id.utf8
        guard (1...128).contains(bytes.count) else { return false }
        return bytes.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E || b == 0x5F
                || b == 0x3A || b == 0x2D
        }
    }
}
