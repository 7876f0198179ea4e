import Foundation
import GatewayProtocol
import GatewayClient
import Logging

/// Why a gateway connection ended, which decides whether `tail` reconnects.
enum ConnectionEnd: Error {
    /// A transient failure (dropped connection, restart, timeout): reconnect with backoff.
    case retryable(String)
    /// A failure that retrying cannot fix (bad token, forbidden session, protocol error).
    case fatal(CtlError)
    /// SIGINT/SIGTERM arrived.
    case stopped
}

/// What `tail` was asked to do.
struct TailSettings: Sendable {
    /// Where the replay starts.
    enum Start: Sendable {
        /// Every event with seq > N that is still held.
        case since(UInt64)
        /// The last N events: join without `since` to learn the head H, then re-join with `since` = max(0, H - N).
        case last(UInt64)
    }

    /// Session id.
    var session: String
    /// Replay start.
    var start: Start
    /// Keep printing live events until interrupted.
    var follow: Bool
    /// Reconnect attempts allowed in a row (`nil` = unlimited).
    var maxReconnects: Int?
    /// Print each event frame as received, one per line.
    var json: Bool
    /// Leave out ephemeral events (deltas).
    var hideDeltas: Bool
    /// Which kinds to print.
    var kinds: KindFilter
    /// Join with presence and print presence changes.
    var presence = false
}

/// The operator connection behind `gatewayctl tail`: connect, authenticate, join, print, and resume after a drop.
///
/// Resume is exact: the runner remembers the last durable seq it received (printed or filtered out) and the log's
/// epoch, re-joins with `since` = that seq and the epoch, and drops any event whose seq is not greater (the gateway
/// replays after `since` and turns live with no gap; the check makes a duplicate impossible even if it did not).
///
/// Every wait is bounded: a receive waits at most 200 ms before the stop flag, flushing and the keepalive are looked
/// at; a silent connection is pinged after 15 s and abandoned 15 s later; reconnects wait with jittered exponential
/// backoff from 0.25 s up to 10 s.
///
/// Owned by the thread that runs the command (not `Sendable`).
final class TailRunner {
    /// Receive slice: the longest the runner goes without looking at the stop flag.
    static let receiveSlice: Duration = .milliseconds(200)
    /// Silence after which a ping is sent.
    static let pingAfter: Duration = .seconds(15)
    /// Time allowed for the ping's answer (any frame counts).
    static let pingTimeout: Duration = .seconds(15)
    /// Time allowed for `welcome` after the upgrade.
    static let welcomeTimeout: Duration = .seconds(10)
    /// Without `--follow`: the longest pause in the replay before giving up.
    static let replayStallTimeout: Duration = .seconds(30)
    /// A connection that stayed joined this long resets the reconnect counter.
    static let stableConnection: Duration = .seconds(5)
    /// First reconnect delay (before jitter).
    static let backoffInitial = 0.25
    /// Longest reconnect delay.
    static let backoffMax = 10.0

    private let endpoint: EndpointOptions.Resolved
    private let settings: TailSettings
    private let output: OutputSink
    private let formatter: EventFormatter
    private let logger: Logger

    /// The last durable seq received (printed or filtered out); `nil` before the first.
    private var lastSeq: UInt64?
    /// The log's epoch from the last `joined`.
    private var epoch: String?
    /// A join succeeded at least once (before that, failures are reported, not retried).
    private var everJoined = false
    /// When the current connection's join succeeded.
    private var joinedAt: ContinuousClock.Instant?

    /// Creates a runner.
    /// - Parameters:
    ///   - endpoint: Gateway URL, token and TLS.
    ///   - settings: What to tail.
    ///   - output: Where lines go.
    ///   - formatter: Human line format.
    ///   - logger: Diagnostics (reconnects, resets).
    init(
        endpoint: EndpointOptions.Resolved, settings: TailSettings, output: OutputSink, formatter: EventFormatter,
        logger: Logger
    ) {
        self.endpoint = endpoint
        self.settings = settings
        self.output = output
        self.formatter = formatter
        self.logger = logger
    }

    /// Runs until the replay is printed (without `--follow`), a signal arrives, or a fatal error.
    /// - Throws: ``CtlError`` with the exit code for the failure.
    func run() throws(CtlError) {
        var failures = 0
        while true {
            if StopSignals.requested { return try output.flush() }
            joinedAt = nil
            let end: ConnectionEnd
            do throws(ConnectionEnd) {
                try runConnection()
                try flushOutput()
                return
            } catch {
                end = error
            }
            try output.flush()
            switch end {
            case .stopped:
                return
            case .fatal(let failure):
                throw failure
            case .retryable(let why):
                guard everJoined else {
                    throw CtlError.connection("cannot reach the gateway at \(endpoint.urlText): \(why)")
                }
                if let joinedAt, ContinuousClock.now - joinedAt >= Self.stableConnection { failures = 0 }
                failures += 1
                if let max = settings.maxReconnects, failures > max {
                    throw CtlError.connection(
                        "connection to \(endpoint.urlText) lost (\(why)); gave up after \(max) reconnect attempt(s)")
                }
                let delay = Self.backoff(attempt: failures)
                let delayMs = delay.components.seconds * 1_000 + delay.components.attoseconds / 1_000_000_000_000_000
                logger.notice(
                    "connection lost; reconnecting",
                    metadata: [
                        "reason": "\(why)", "attempt": "\(failures)",
                        "delay.ms": "\(delayMs)",
                        "since": "\(lastSeq.map(String.init) ?? "-")",
                    ])
                guard StopSignals.sleep(delay) else { return }
            }
        }
    }

    /// Jittered exponential backoff: half the exponential delay plus a random part of the other half.
    /// - Parameters:
    ///   - attempt: 1 for the first reconnect.
    /// - Returns: The wait, between 0.125 s and 10 s.
    static func backoff(attempt: Int) -> Duration {
        let exponent = Double(min(max(attempt - 1, 0), 16))
        let base = min(backoffMax, backoffInitial * pow(2, exponent))
        let seconds = base / 2 + Double.random(in: 0...(base / 2))
        return .milliseconds(Int(seconds * 1_000))
    }

    // MARK: - One connection

    /// One connection: connect, hello, join, then print until done, stopped or dropped.
    private func runConnection() throws(ConnectionEnd) {
        let ws = try connect()
        defer { ws.close() }

        var probing = false
        if let lastSeq {
            try sendJoin(ws, since: lastSeq, epoch: epoch)
        } else {
            switch settings.start {
            case .since(let n): try sendJoin(ws, since: n, epoch: nil)
            case .last:
                probing = true
                try sendJoin(ws, since: nil, epoch: nil)
            }
        }

        var joined = false
        var target: UInt64 = 0
        var lastHeard = ContinuousClock.now
        var lastProgress = ContinuousClock.now
        var pingSentAt: ContinuousClock.Instant?
        while true {
            if StopSignals.requested {
                try? ws.sendClose(code: 1000, reason: "", timeout: .milliseconds(300))
                throw .stopped
            }
            if !settings.follow && joined && (lastSeq ?? 0) >= target {
                try? ws.sendClose(code: 1000, reason: "", timeout: .milliseconds(300))
                return
            }
            let message: WebSocketClient.Message
            do {
                message = try ws.receive(timeout: Self.receiveSlice)
            } catch let error as GatewayClientError where error.isTimeout {
                try flushOutput()
                let now = ContinuousClock.now
                if let pingSentAt {
                    if now - pingSentAt > Self.pingTimeout {
                        throw .retryable("no answer from the gateway for \(Self.pingAfter + Self.pingTimeout)")
                    }
                } else if now - lastHeard > Self.pingAfter {
                    do { try ws.sendPing([], timeout: .seconds(2)) } catch { throw Self.classify(error) }
                    pingSentAt = now
                }
                if !settings.follow && now - lastProgress > Self.replayStallTimeout {
                    throw .fatal(
                        .connection(
                            "the replay stalled: no event for \(Self.replayStallTimeout) (last seq \(lastSeq ?? 0), head \(target))"
                        ))
                }
                continue
            } catch {
                throw Self.classify(error)
            }
            lastHeard = ContinuousClock.now
            pingSentAt = nil
            switch message {
            case .text(let text):
                guard let frame = ServerMessage.decode(text) else {
                    logger.debug("ignored a frame that is not a JSON object", metadata: ["bytes": "\(text.utf8.count)"])
                    continue
                }
                switch frame {
                case .joined(let j) where j.session == settings.session:
                    if probing, case .last(let n) = settings.start {
                        probing = false
                        try sendJoin(ws, since: j.head > n ? j.head - n : 0, epoch: nil)
                        continue
                    }
                    joined = true
                    lastProgress = ContinuousClock.now
                    target = try accept(j)
                    if settings.presence, let list = j.presence {
                        try printLine(
                            settings.json
                                ? JSONText.singleLine(text)
                                : "presence: "
                                    + (list.isEmpty
                                        ? "nobody"
                                        : list.map {
                                            TextEscaper.escape($0.role, limit: 16) + "/" + TextEscaper.escape($0.sub, limit: 64)
                                                + ($0.conns > 1 ? " ×\($0.conns)" : "")
                                        }.joined(separator: ", ")))
                    }
                case .presence(let session, let action, let sub, let role)
                where session == settings.session && settings.presence && joined:
                    let who = TextEscaper.escape(role, limit: 16) + "/" + TextEscaper.escape(sub, limit: 64)
                    try printLine(
                        settings.json
                            ? JSONText.singleLine(text)
                            : (action == "join" ? "+ \(who) joined" : "- \(who) left"))
                    try flushOutput()
                case .left(let session, let reason?) where session == settings.session:
                    // The gateway ended the subscription (v1.1): `reset` is resumed like a dropped connection,
                    // anything else (`forbidden`) is final.
                    if reason == "reset" { throw .retryable("the gateway ended the subscription (reset)") }
                    throw .fatal(
                        .notFound("the gateway ended the subscription to \(TextEscaper.escape(session)): \(TextEscaper.escape(reason))"))
                case .event(let event) where event.session == settings.session:
                    // Before the decisive `joined`, events belong to the probe subscription (or none): the replay
                    // that follows `joined` carries them in order.
                    guard joined else { continue }
                    if let seq = event.seq {
                        if let lastSeq, seq <= lastSeq { continue }
                        if let lastSeq, seq != lastSeq + 1 {
                            logger.warning(
                                "events missing between seqs", metadata: ["after": "\(lastSeq)", "next": "\(seq)"])
                        }
                        lastSeq = seq
                        lastProgress = ContinuousClock.now
                        // Without --follow, stop at the head reported by `joined`.
                        if !settings.follow && seq > target { continue }
                    } else if !settings.follow || settings.hideDeltas {
                        continue
                    }
                    guard settings.kinds.matches(event.kind) else { continue }
                    try printEvent(event, text: text)
                    if settings.follow && (lastSeq ?? 0) >= target { try flushOutput() }
                case .error(let code, let message):
                    throw Self.failure(errorCode: code, message: message, session: settings.session)
                default:
                    continue
                }
            case .close(let code, let reason):
                throw Self.classifyClose(code: code, reason: reason)
            case .binary, .ping, .pong:
                continue
            }
        }
    }

    /// Takes a decisive `joined`: records the epoch and reports trims and resets.
    /// - Returns: The head to replay up to.
    private func accept(_ j: ServerMessage.Joined) throws(ConnectionEnd) -> UInt64 {
        if j.reset {
            if lastSeq != nil {
                logger.warning(
                    "the transcript was reset (log repaired or recreated); replaying from the first held event",
                    metadata: [
                        "old.epoch": "\(TextEscaper.escape(epoch ?? ""))", "epoch": "\(TextEscaper.escape(j.epoch))",
                    ])
            } else {
                logger.notice(
                    "--since is past the session's head; replaying from the first held event",
                    metadata: ["head": "\(j.head)"])
            }
            lastSeq = nil
        }
        if let first = j.trimmedFirst {
            logger.notice("older events were removed by retention", metadata: ["first.held": "\(first)"])
            if first > j.head { lastSeq = max(lastSeq ?? 0, j.head) }
        }
        if !settings.follow && j.head == 0 {
            throw .fatal(
                .notFound("session \(TextEscaper.escape(settings.session)) has no events on this gateway (head 0)"))
        }
        if everJoined && joinedAt == nil {
            logger.notice("resumed", metadata: ["since": "\(lastSeq.map(String.init) ?? "-")", "head": "\(j.head)"])
        }
        epoch = j.epoch
        everJoined = true
        joinedAt = ContinuousClock.now
        return j.head
    }

    private func printEvent(_ event: EventView, text: String) throws(ConnectionEnd) {
        do {
            if settings.json {
                try output.writeLine(JSONText.singleLine(text))
            } else {
                try output.writeLine(formatter.line(event, nowMs: Timestamps.nowMs()))
            }
        } catch {
            throw .fatal(error)
        }
    }

    private func printLine(_ line: String) throws(ConnectionEnd) {
        do { try output.writeLine(line) } catch { throw .fatal(error) }
    }

    private func flushOutput() throws(ConnectionEnd) {
        do { try output.flush() } catch { throw .fatal(error) }
    }

    private func sendJoin(_ ws: WebSocketClient, since: UInt64?, epoch: String?) throws(ConnectionEnd) {
        var frame: [UInt8] = Array(#"{"type":"join","session":"#.utf8)
        JSONWriter.appendString(settings.session, to: &frame)
        if let since {
            frame += Array(#","since":\#(since)"#.utf8)
            if let epoch, !epoch.isEmpty {
                frame += Array(#","epoch":"#.utf8)
                JSONWriter.appendString(epoch, to: &frame)
            }
        }
        if settings.presence { frame += Array(#","presence":true"#.utf8) }
        frame.append(UInt8(ascii: "}"))
        do { try ws.sendText(bytes: frame, timeout: .seconds(5)) } catch { throw Self.classify(error) }
    }

    // MARK: - Connect and classify

    /// Connects with `Authorization: Bearer`, sends `hello` and waits for `welcome`.
    private func connect() throws(ConnectionEnd) -> WebSocketClient {
        let ws: WebSocketClient
        do {
            ws = try WebSocketClient.connect(
                to: endpoint.url, headers: [("Authorization", "Bearer " + endpoint.token)], tls: endpoint.tls,
                timeout: endpoint.connectTimeout)
        } catch {
            throw Self.classify(error)
        }
        do {
            try ws.sendText(#"{"type":"hello"}"#, timeout: .seconds(5))
        } catch {
            ws.close()
            throw Self.classify(error)
        }
        let deadline = ContinuousClock.now + Self.welcomeTimeout
        while true {
            if StopSignals.requested {
                ws.close()
                throw .stopped
            }
            let message: WebSocketClient.Message
            do {
                message = try ws.receive(timeout: Self.receiveSlice)
            } catch let error as GatewayClientError where error.isTimeout {
                if ContinuousClock.now >= deadline {
                    ws.close()
                    throw .retryable("no welcome within \(Self.welcomeTimeout)")
                }
                continue
            } catch {
                ws.close()
                throw Self.classify(error)
            }
            switch message {
            case .text(let text):
                switch ServerMessage.decode(text) {
                case .welcome(let sub, let role):
                    logger.debug(
                        "authenticated",
                        metadata: ["sub": "\(TextEscaper.escape(sub))", "role": "\(TextEscaper.escape(role))"])
                    return ws
                case .error(let code, let message):
                    ws.close()
                    throw .fatal(
                        .connection(
                            "the gateway refused hello: \(TextEscaper.escape(code)): \(TextEscaper.escape(message, limit: 300))"
                        ))
                default:
                    continue
                }
            case .close(let code, let reason):
                ws.close()
                throw Self.classifyClose(code: code, reason: reason)
            default:
                continue
            }
        }
    }

    /// Maps a client library error to retry or fail.
    static func classify(_ error: any Error) -> ConnectionEnd {
        guard let e = error as? GatewayClientError else {
            return .retryable(TextEscaper.escape("\(error)", limit: 300))
        }
        if e.isClosed {
            if e.closeCode != nil { return classifyClose(code: e.closeCode, reason: e.closeReason) }
            return .retryable("connection closed (\(EndpointOptions.detail(e)))")
        }
        if e.isHandshakeFailure {
            guard let status = e.httpStatus, status != 101 else {
                return .fatal(.connection("invalid WebSocket upgrade reply: \(EndpointOptions.detail(e))"))
            }
            let body = e.httpBodyString.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
            let shown = body.isEmpty ? "" : ": " + TextEscaper.escape(body, limit: 200)
            switch status {
            case 500...599, 429, 408:
                return .retryable("HTTP \(status)\(shown)")
            case 404:
                return .fatal(.connection("the gateway refused the upgrade: HTTP 404\(shown) (is the path /v1/ws?)"))
            default:
                return .fatal(.connection("the gateway refused the upgrade: HTTP \(status)\(shown)"))
            }
        }
        if e.isTLSFailure { return .fatal(.connection("TLS failed: \(EndpointOptions.detail(e))")) }
        if e.isProtocolViolation {
            return .fatal(.connection("the gateway broke the WebSocket protocol: \(EndpointOptions.detail(e))"))
        }
        if e.isTimeout { return .retryable("timed out (\(EndpointOptions.detail(e)))") }
        return .retryable(EndpointOptions.detail(e))
    }

    /// Maps a close frame to retry or fail; the server's reason is shown escaped.
    static func classifyClose(code: UInt16?, reason: String) -> ConnectionEnd {
        let why = reason.isEmpty ? "" : ": " + TextEscaper.escape(reason, limit: 200)
        switch code {
        case 4001:
            return .fatal(.connection("authentication failed\(why) (close 4001)"))
        case 4008:
            return .fatal(.connection("closed by the gateway's policy\(why) (close 4008)"))
        case 1003, 1007, 1009, 4000:
            return .fatal(.connection("closed for a protocol error\(why) (close \(code ?? 0))"))
        case nil:
            return .retryable("the gateway closed the connection")
        case let code?:
            return .retryable("the gateway closed the connection\(why) (close \(code))")
        }
    }

    /// Maps an `error` frame to a failure.
    static func failure(errorCode: String, message: String, session: String) -> ConnectionEnd {
        let text = TextEscaper.escape(message, limit: 300)
        switch errorCode {
        case "forbidden":
            return .fatal(.notFound("forbidden: \(text)"))
        case "not_found":
            return .fatal(.notFound("not found: \(text)"))
        case "bad_request":
            return .fatal(.usage("the gateway refused the join of \(TextEscaper.escape(session)): \(text)"))
        case "unavailable":
            return .retryable("the gateway could not read the transcript: \(text)")
        default:
            return .fatal(.connection("gateway error \(TextEscaper.escape(errorCode, limit: 40)): \(text)"))
        }
    }
}
