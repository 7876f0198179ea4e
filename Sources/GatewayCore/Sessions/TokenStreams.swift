import GatewayAuth
import GatewayConfig
import GatewayProtocol
import Logging
import Prometheus
import TranscriptLog

// Token streams (protocol v1.1 §3, docs/protocol.md §3.7): an agent streams an answer as `*.delta` ephemeral
// publishes whose `data` is `{"stream":ID,"text":T}`; the gateway keeps the text so far per stream (session,
// publisher `sub`, ID), sends a joiner one snapshot per open stream once its replay is queued, closes a stream when
// the publisher's durable final message (`data.stream` = ID) commits, and finalizes a stream left idle for
// `streams.idle_timeout_seconds` with a durable `chat.message` `status: interrupted` in the publisher's name.
//
// Where the hooks are (so that the publish path stays one function another branch can reshape):
// - `publish` (ClientFrames.swift): ``GatewayServer/streamScreen(_:_:_:)`` right after the rate limit (refuses bad
//   stream input and appends deltas), ``GatewayServer/ephemeralFanOut(_:frame:stream:)`` instead of
//   `fanOut.ephemeral` (cluster mode also hands the event to the other nodes);
// - `handleCommitted`: ``GatewayServer/streamCommitted(_:)`` (closes streams whose final or finalize committed);
// - `completeJoin`: ``GatewayServer/streamsJoined(_:_:)``; ReplayPump's `onLive` for a joiner that replays first;
// - `handleUpdates`: `.ephemeral` and `.streamsIdle` from a shared engine; the housekeeping tick:
//   ``GatewayServer/streamsTick(_:)``.

/// A stream's identity within its session: the publisher's `sub` and the stream id.
struct StreamKey: Hashable, Sendable {
    var sub: String
    var id: String
}

/// One open stream of this node. Service thread only.
final class OpenStream {
    let session: String
    let key: StreamKey
    /// The kind of the delta that opened it, and the publisher's role.
    let kind: String
    let role: String
    /// All text so far (UTF-8): each delta appends to it, nothing re-encodes it per delta.
    var text: [UInt8]
    var lastDeltaNs: UInt64
    var lastTimestampMs: Int64
    /// Closed or finalized: the entry in the idle heap is stale.
    var closed = false

    init(session: String, key: StreamKey, kind: String, role: String, nowNs: UInt64, nowMs: Int64) {
        self.session = session
        self.key = key
        self.kind = kind
        self.role = role
        self.text = []
        self.lastDeltaNs = nowNs
        self.lastTimestampMs = nowMs
    }
}

/// What a publish's `data` says about a stream.
enum StreamField: Equatable {
    /// No `stream` member (or `data` is not an object): not a stream publish.
    case none
    /// `stream` present but unusable: the reason, for the `bad_request`.
    case invalid(String)
    /// A valid stream id, with `text` decoded when it is a string (nil when missing or not a string).
    case stream(id: String, text: [UInt8]?)
}

/// The token streams this node holds, their idle deadlines and the durable publishes in flight that close or finalize
/// one. Service thread only; every collection is bounded (streams by `streams.max_per_session` per session and by
/// their byte cap, pending commits by ``maxPending``).
final class TokenStreams {
    /// Open streams per session.
    private(set) var bySession: [String: [StreamKey: OpenStream]] = [:]
    private(set) var openCount = 0
    /// Largest text of one stream (UTF-8 bytes): `limits.max_message_bytes` − 1024.
    let maxTextBytes: Int
    let maxPerSession: Int
    let idleNs: UInt64
    /// Idle deadlines: a min-heap with one entry per open stream, refreshed lazily (a delta does not touch it; a
    /// popped entry whose stream saw a delta since is pushed back with its real deadline).
    private var heap: [(deadlineNs: UInt64, stream: OpenStream)] = []

    /// A durable publish in flight that closes a stream (its final message) or finalizes one (the gateway's).
    struct CommitKey: Hashable {
        var connection: ConnectionID
        var session: String
        var id: String
    }
    enum PendingCommit {
        /// The publisher's final message for the stream: close it once the message commits.
        case final(StreamKey, sinceNs: UInt64)
        /// The gateway's finalize event; resubmitted if the store refuses it (up to ``maxFinalizeAttempts``).
        case finalize(AppendRequest, key: StreamKey, attempts: Int)
    }
    private(set) var pending: [CommitKey: PendingCommit] = [:]
    /// Final messages in the order they were noted, to forget those whose submit was refused (no commit follows).
    private var finalsOrder: [(key: CommitKey, sinceNs: UInt64)] = []
    private var finalsHead = 0
    /// Finalize events to submit on the next tick (the store refused them, or was draining its queue).
    var retries: [(request: AppendRequest, key: StreamKey, attempts: Int)] = []
    /// Connection ids of finalize events: counted down from the top, where no connection's id ever is (connections
    /// count up from 0), so their acks reach nobody.
    private var nextFinalizer: UInt64 = UInt64.max

    static let maxPending = 65_536
    static let maxFinalizeAttempts = 5
    /// A noted final message whose submit was refused is forgotten after this long.
    static let finalForgetNs: UInt64 = 600_000_000_000
    /// Idle deadlines examined per housekeeping tick at most.
    static let idleChecksPerTick = 1_024

    init(settings: StreamSettings, maxMessageBytes: Int) {
        self.maxTextBytes = max(0, maxMessageBytes - 1024)
        self.maxPerSession = settings.maxPerSession
        self.idleNs = UInt64(settings.idleTimeoutSeconds * 1e9)
    }

    // MARK: parsing

    /// Reads `stream` and `text` from a publish's `data` (raw JSON) with the strict scanner.
    static func field(of data: [UInt8]) -> StreamField {
        guard data.first == UInt8(ascii: "{") else { return .none }
        return data.withUnsafeBytes { bytes -> StreamField in
            guard case .success(let object) = JSONScanner().scanObject(bytes),
                let stream = object.member("stream", in: bytes)
            else { return .none }
            guard stream.type == .string, let id = JSONScanner.decodeString(bytes, range: stream.range) else {
                return .invalid("data.stream must be a string of 1-100 characters of A-Z a-z 0-9 . _ : -")
            }
            guard id.utf8.count <= 100, FieldRules.isValidSessionID(id) else {
                return .invalid("data.stream must be 1-100 characters of A-Z a-z 0-9 . _ : -")
            }
            guard let text = object.member("text", in: bytes), text.type == .string else {
                return .stream(id: id, text: nil)
            }
            return .stream(id: id, text: JSONScanner.decodeStringBytes(bytes, range: text.range))
        }
    }

    // MARK: streams

    func stream(session: String, key: StreamKey) -> OpenStream? { bySession[session]?[key] }

    func hasStreams(session: String) -> Bool { bySession[session] != nil }

    /// Opens a stream (the caller checked the per-session limit).
    func open(session: String, key: StreamKey, kind: String, role: String, nowNs: UInt64, nowMs: Int64) -> OpenStream {
        let s = OpenStream(session: session, key: key, kind: kind, role: role, nowNs: nowNs, nowMs: nowMs)
        bySession[session, default: [:]][key] = s
        openCount += 1
        push(deadline: nowNs + idleNs, s)
        return s
    }

    func count(session: String) -> Int { bySession[session]?.count ?? 0 }

    /// Removes a stream (closed or finalized); its memory goes with it.
    @discardableResult
    func remove(session: String, key: StreamKey) -> OpenStream? {
        guard var streams = bySession[session], let s = streams.removeValue(forKey: key) else { return nil }
        bySession[session] = streams.isEmpty ? nil : streams
        s.closed = true
        s.text = []
        openCount -= 1
        return s
    }

    /// Streams whose idle deadline passed, at most ``idleChecksPerTick`` heap entries examined.
    func expired(nowNs: UInt64) -> [OpenStream] {
        var out: [OpenStream] = []
        var checks = 0
        while checks < Self.idleChecksPerTick, let top = heap.first, top.deadlineNs <= nowNs {
            checks += 1
            popTop()
            let s = top.stream
            if s.closed { continue }
            let due = s.lastDeltaNs + idleNs
            if due > nowNs {
                push(deadline: due, s)
            } else {
                out.append(s)
            }
        }
        return out
    }

    // MARK: pending commits

    /// Notes the publisher's final message for `key` (before its submit; a refused submit is forgotten later).
    /// False when the table is full (the caller closes the stream at once instead).
    func noteFinal(_ commit: CommitKey, key: StreamKey, nowNs: UInt64) -> Bool {
        // The order list holds at most maxPending notes: the oldest note goes first (its commit, if still to come,
        // then closes nothing; the stream goes idle instead).
        while finalsOrder.count - finalsHead >= Self.maxPending { forgetOldestFinal() }
        guard pending.count < Self.maxPending else { return false }
        pending[commit] = .final(key, sinceNs: nowNs)
        finalsOrder.append((commit, nowNs))
        return true
    }

    /// A connection id for one finalize event.
    func finalizerID() -> ConnectionID {
        defer { nextFinalizer -= 1 }
        return ConnectionID(raw: nextFinalizer)
    }

    func noteFinalize(_ commit: CommitKey, request: AppendRequest, key: StreamKey, attempts: Int) {
        pending[commit] = .finalize(request, key: key, attempts: attempts)
    }

    func takePending(_ commit: CommitKey) -> PendingCommit? { pending.removeValue(forKey: commit) }

    /// Forgets final messages noted longer ago than ``finalForgetNs`` (their submit was refused, or their commit
    /// was taken already); bounded work per call.
    func forgetStaleFinals(nowNs: UInt64) {
        var n = 0
        while finalsHead < finalsOrder.count, n < 1_024, nowNs - finalsOrder[finalsHead].sinceNs > Self.finalForgetNs {
            forgetOldestFinal()
            n += 1
        }
    }

    private func forgetOldestFinal() {
        let entry = finalsOrder[finalsHead]
        if case .final(_, let since) = pending[entry.key], since == entry.sinceNs { pending[entry.key] = nil }
        finalsHead += 1
        if finalsHead > 4_096 && finalsHead * 2 > finalsOrder.count {
            finalsOrder.removeFirst(finalsHead)
            finalsHead = 0
        }
    }

    // MARK: frames

    /// `{"stream":ID,"full":T}`: a snapshot's data.
    static func snapshotData(id: String, text: [UInt8]) -> [UInt8] {
        streamData(id: id, textKey: #","full":"#, text: text, tail: "}")
    }

    /// `{"stream":ID,"text":T,"status":"interrupted"}`: a finalize event's data.
    static func finalizeData(id: String, text: [UInt8]) -> [UInt8] {
        streamData(id: id, textKey: #","text":"#, text: text, tail: #","status":"interrupted"}"#)
    }

    /// `{"stream":ID` + `textKey` + T as a JSON string (escaped once, here) + `tail`.
    private static func streamData(id: String, textKey: String, text: [UInt8], tail: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.count + id.utf8.count + textKey.utf8.count + tail.utf8.count + 16)
        out.append(contentsOf: #"{"stream":"#.utf8)
        JSONWriter.appendString(id, to: &out)
        out.append(contentsOf: textKey.utf8)
        text.withUnsafeBytes { JSONWriter.appendString(utf8: $0, to: &out) }
        out.append(contentsOf: tail.utf8)
        return out
    }

    // MARK: heap

    private func push(deadline: UInt64, _ s: OpenStream) {
        heap.append((deadline, s))
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[parent].deadlineNs > heap[i].deadlineNs else { break }
            heap.swapAt(parent, i)
            i = parent
        }
    }

    private func popTop() {
        let last = heap.removeLast()
        guard !heap.isEmpty else { return }
        heap[0] = last
        var i = 0
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var m = i
            if l < heap.count && heap[l].deadlineNs < heap[m].deadlineNs { m = l }
            if r < heap.count && heap[r].deadlineNs < heap[m].deadlineNs { m = r }
            if m == i { break }
            heap.swapAt(m, i)
            i = m
        }
    }
}

/// The publish hook's verdict.
enum StreamScreen {
    /// Refused with this error (the caller answers the publisher): nothing more happens to the publish.
    case refused(ErrorCode, String)
    /// Carry on; for a stream delta, what the other nodes of a cluster need to append it.
    case pass(StreamAppend?)
}

extension GatewayServer {
    static let finalizeIDPrefix = "stream:"

    /// Publish hook, after the rate limit: refuses a client id starting `stream:`, validates and appends a stream
    /// delta (opening the stream on its first delta) and notes a durable final message. `.refused` with the error the
    /// publisher gets (an error frame on the WebSocket, the HTTP status on the HTTP API; a WebSocket lives). `origin`
    /// keys the publish's commit result (a connection, or an HTTP API exchange).
    func streamScreen(_ p: ClientFrame.Publish, _ principal: Principal, origin: ConnectionID) -> StreamScreen {
        if p.id.hasPrefix(Self.finalizeIDPrefix) {
            return .refused(.badRequest, "ids starting with stream: are reserved for the gateway")
        }
        if !p.isEphemeral {
            // A final message closes its stream once it commits. In cluster mode the stream may be another node's.
            guard streams.hasStreams(session: p.session) || store.sharesStreams,
                case .stream(let id, _) = TokenStreams.field(of: p.data)
            else { return .pass(nil) }
            let key = StreamKey(sub: principal.sub, id: id)
            let commit = TokenStreams.CommitKey(connection: origin, session: p.session, id: p.id)
            if !streams.noteFinal(commit, key: key, nowNs: MonotonicClock.nowNs()) {
                closeStream(session: p.session, key: key)
            }
            return .pass(nil)
        }
        guard p.kind.hasSuffix(".delta") else { return .pass(nil) }
        let id: String
        let text: [UInt8]
        switch TokenStreams.field(of: p.data) {
        case .none:
            return .pass(nil)
        case .invalid(let why):
            return .refused(.badRequest, why)
        case .stream(_, nil):
            return .refused(.badRequest, "data.text must be a string when data.stream is set")
        case .stream(let i, let t?):
            id = i
            text = t
        }
        let key = StreamKey(sub: principal.sub, id: id)
        let nowNs = MonotonicClock.nowNs()
        let nowMs = WallClock.nowMs()
        let stream: OpenStream
        if let open = streams.stream(session: p.session, key: key) {
            guard open.text.count + text.count <= streams.maxTextBytes else {
                finalize(open)
                return .refused(.tooLarge, "stream \(id) would pass \(streams.maxTextBytes) bytes; it is finalized")
            }
            stream = open
        } else {
            guard text.count <= streams.maxTextBytes else {
                return .refused(.tooLarge, "stream text over \(streams.maxTextBytes) bytes")
            }
            guard streams.count(session: p.session) < streams.maxPerSession else {
                return .refused(.rateLimited, "too many open streams in this session (max \(streams.maxPerSession))")
            }
            stream = streams.open(session: p.session, key: key, kind: p.kind, role: principal.role.rawValue, nowNs: nowNs, nowMs: nowMs)
            metrics.streamsOpen.set(Double(streams.openCount))
        }
        stream.text.append(contentsOf: text)
        stream.lastDeltaNs = nowNs
        stream.lastTimestampMs = nowMs
        guard store.sharesStreams else { return .pass(nil) }
        return .pass(
            StreamAppend(
                key: key, kind: stream.kind, role: stream.role, text: text, endOffset: stream.text.count, timestampMs: nowMs))
    }

    /// Publish hook, in place of `fanOut.ephemeral`: fans an ephemeral event out here and, in cluster mode, hands it
    /// to the other nodes with its stream delta.
    func ephemeralFanOut(_ session: String, frame: [UInt8], stream: StreamAppend?) {
        fanOut.ephemeral(session: session, frame: frame)
        if store.sharesStreams { store.publishEphemeral(EphemeralPublish(session: session, frame: frame, stream: stream)) }
    }

    /// `handleCommitted` hook: a final message or a finalize event committed (closes its stream) or was refused (a
    /// finalize is tried again).
    func streamCommitted(_ r: CommitResult) {
        guard !streams.pending.isEmpty,
            let entry = streams.takePending(TokenStreams.CommitKey(connection: r.connection, session: r.session, id: r.id))
        else { return }
        switch (entry, r.outcome) {
        case (.final(let key, _), .success):
            closeStream(session: r.session, key: key)
        case (.final, .failure):
            break  // the final was not stored: the stream stays open (its publisher retries, or it goes idle)
        case (.finalize(_, let key, _), .success):
            store.closeStream(session: r.session, sub: key.sub, id: key.id)
        case (.finalize(let request, let key, let attempts), .failure(let e)):
            if attempts < TokenStreams.maxFinalizeAttempts {
                streams.retries.append((request, key, attempts + 1))
            } else {
                logger.error(
                    "stream finalize not stored; its text is lost",
                    metadata: ["session": "\(r.session)", "stream": "\(key.id)", "error": "\(e)"])
            }
        }
    }

    /// Closes a stream of this node (its final message committed) and, in cluster mode, its shared copy.
    func closeStream(session: String, key: StreamKey) {
        if streams.remove(session: session, key: key) != nil { metrics.streamsOpen.set(Double(streams.openCount)) }
        store.closeStream(session: session, sub: key.sub, id: key.id)
    }

    /// The gateway's finalize of a stream of this node (idle, or a delta would pass its size): the durable
    /// `chat.message` `status: interrupted` with id `stream:<ID>`, in the publisher's name, acked to nobody.
    func finalize(_ s: OpenStream) {
        let text = s.text
        streams.remove(session: s.session, key: s.key)
        metrics.streamsOpen.set(Double(streams.openCount))
        finalize(session: s.session, key: s.key, role: s.role, text: text)
    }

    private func finalize(session: String, key: StreamKey, role: String, text: [UInt8]) {
        let request = AppendRequest(
            session: session, id: Self.finalizeIDPrefix + key.id, kind: "chat.message", sub: key.sub, role: role,
            timestampMs: WallClock.nowMs(), data: TokenStreams.finalizeData(id: key.id, text: text))
        submitFinalize(request, key: key, attempts: 1)
    }

    private func submitFinalize(_ request: AppendRequest, key: StreamKey, attempts: Int) {
        let connection = streams.finalizerID()
        if draining || store.submit(PendingAppend(connection: connection, request: request)) != .accepted {
            if attempts < TokenStreams.maxFinalizeAttempts && !draining {
                streams.retries.append((request, key, attempts + 1))
            } else {
                logger.error(
                    "stream finalize not submitted; its text is lost",
                    metadata: ["session": "\(request.session)", "stream": "\(key.id)", "draining": "\(draining)"])
            }
            return
        }
        if attempts == 1 { metrics.streamsFinalized.increment() }
        inFlight += 1
        streams.noteFinalize(
            TokenStreams.CommitKey(connection: connection, session: request.session, id: request.id), request: request,
            key: key, attempts: attempts)
    }

    /// Streams a shared engine claimed for this node after they went idle cluster-wide: finalize each (if this node
    /// holds one of them too, its own copy goes with it).
    func finalizeIdle(session: String, _ idle: [StreamSnapshot]) {
        for s in idle {
            streams.remove(session: session, key: s.key)
            finalize(session: session, key: s.key, role: s.role, text: s.text)
        }
        metrics.streamsOpen.set(Double(streams.openCount))
    }

    /// Housekeeping hook: idle streams (bounded work), finalize retries, forgotten finals. Nothing is finalized while
    /// draining (SIGTERM does not finalize open streams).
    func streamsTick(_ nowNs: UInt64) {
        guard !draining else { return }
        if !streams.retries.isEmpty {
            let retries = streams.retries
            streams.retries.removeAll()
            for r in retries { submitFinalize(r.request, key: r.key, attempts: r.attempts) }
        }
        if streams.openCount > 0 {
            for s in streams.expired(nowNs: nowNs) {
                if store.sharesStreams {
                    // Cluster mode: the shared engine finalizes idle streams exactly once cluster-wide (its claim);
                    // this node only forgets its copy.
                    streams.remove(session: s.session, key: s.key)
                } else {
                    finalize(s)
                }
            }
            metrics.streamsOpen.set(Double(streams.openCount))
        }
        streams.forgetStaleFinals(nowNs: nowNs)
    }

    /// `completeJoin` hook, after `joined` was queued and before the replay starts: a live subscription gets the
    /// snapshots now, a catching-up one when the replay pump turns it live (``ReplayPump/onLive``), after its replay.
    func streamsJoined(_ conn: Connection, _ sub: Subscription) {
        sub.snapshotPending = true
        if !sub.catchingUp { sendStreamSnapshots(conn, sub) }
    }

    /// One ephemeral snapshot event per open stream of the subscription's session: this node's from memory, the
    /// other nodes' (cluster mode) from the shared engine, each remembered as a floor for the deltas in flight.
    func sendStreamSnapshots(_ conn: Connection, _ sub: Subscription) {
        sub.snapshotPending = false
        sub.streamFloors.removeAll()
        let session = sub.session
        if let local = streams.bySession[session] {
            for s in local.values {
                io.send(conn, snapshotFrame(session: session, key: s.key, kind: s.kind, role: s.role, ms: s.lastTimestampMs, text: s.text), ephemeral: true)
            }
        }
        guard store.sharesStreams else { return }
        for s in store.openStreams(session: session) where streams.stream(session: session, key: s.key) == nil {
            io.send(conn, snapshotFrame(session: session, key: s.key, kind: s.kind, role: s.role, ms: s.timestampMs, text: s.text), ephemeral: true)
            sub.streamFloors[s.key] = s.text.count
        }
    }

    private func snapshotFrame(session: String, key: StreamKey, kind: String, role: String, ms: Int64, text: [UInt8]) -> [UInt8] {
        EventFrames.event(
            session: session, seq: nil, id: key.id, kind: kind, sub: key.sub, role: role, timestampMs: ms,
            data: TokenStreams.snapshotData(id: key.id, text: text))
    }
}
