import Foundation
import GatewayProtocol
import Logging
import Prometheus
import Synchronization

// Cluster mode: ephemeral events and token streams across nodes (docs/scaling.md, "Ephemeral events and token
// streams across nodes").
//
// - An ephemeral event a node fanned out is published by its writer thread on the session's channel as
//   `e <node> - <frame>`, a stream delta as `e <node> <end offset> <sub length>:<sub>:<stream id> <frame>` (a durable
//   push starts with its seq, a digit, so a receiving node tells them apart; older nodes ignore `e` payloads). The
//   subscriber of every other node hands it to the service thread as ``StoreUpdate/ephemeral(session:frame:stream:)``;
//   a node skips its own echo.
// - A stream delta is one pipelined batch with the publish: `APPEND` of the delta's text to the stream's text key,
//   `HSET` of the stream in the session's stream index (`<last delta ms> <node> <role> <kind>`), `PEXPIRE` of both
//   (a safety net: 2 × `streams.idle_timeout_seconds` + 60 s), `ZADD NX` of the session in the set of sessions with
//   streams, then the `PUBLISH`. The APPEND precedes the PUBLISH, so a snapshot read in between already holds the
//   delta, and the joiner's floor (``Subscription/streamFloors``) skips its push.
// - Idle finalize: the subscriber thread of every node looks, once a second, for sessions whose oldest stream may be
//   idle (`ZRANGEBYSCORE`), and runs ``RedisStreamScripts/claim`` on each: streams idle for the timeout are claimed
//   with `SET NX PX` (one node wins each), their text returned, and the session's score moved to its oldest stream.
//   The winner appends the finalize; its commit deletes the stream (``closeStream(session:sub:id:)``). A claimer that
//   dies before that lets its claim expire and another node claims again: the finalize's id `stream:<ID>` from the
//   publisher's sub makes a second append a duplicate, so the transcript holds it once.
extension RedisEventStore {
    var sharesStreams: Bool { true }

    /// Queued for the writer's next batch; dropped (counted) when the bounded queue is full.
    func publishEphemeral(_ event: EphemeralPublish) {
        let size = event.frame.count + (event.stream?.text.count ?? 0) + 64
        let (accepted, first) = shared.withLock { q -> (Bool, Bool) in
            guard !q.stopping, q.writerUp, q.outgoing.count < Self.maxOutgoing, q.outgoingBytes + size <= Self.maxOutgoingBytes
            else { return (false, false) }
            q.outgoing.append(event)
            q.outgoingBytes += size
            return (true, q.outgoing.count == 1 && q.closes.isEmpty)
        }
        if !accepted { metrics.clusterEphemeralDropped.increment() }
        if first { wakeWriter.signal() }
    }

    func closeStream(session: String, sub: String, id: String) {
        let (accepted, first) = shared.withLock { q -> (Bool, Bool) in
            guard q.closes.count < Self.maxOutgoing else { return (false, false) }
            q.closes.append((session, StreamKey(sub: sub, id: id)))
            return (true, q.closes.count == 1 && q.outgoing.isEmpty)
        }
        if !accepted {
            logger.warning(
                "redis stream close queue full; the stream's shared text expires by itself",
                metadata: ["session": "\(session)", "stream": "\(LogSafe.escape(id))"])
        }
        if first { wakeWriter.signal() }
    }

    /// Two pipelined round trips on the service thread's read connection: the session's stream index, then the texts
    /// of the streams other nodes hold.
    func openStreams(session: String) -> [StreamSnapshot] {
        let index = keys.streamIndex(session)
        let found = try? withReader { c throws(RedisError) -> [StreamSnapshot] in
            let fields = try c.command(["HGETALL", index]).items ?? []
            var pending: [(field: [UInt8], snapshot: StreamSnapshot)] = []
            var i = 0
            while i + 1 < fields.count {
                defer { i += 2 }
                guard case .string(let field) = fields[i], let key = RedisKeys.streamKey(field: field),
                    let meta = fields[i + 1].text.flatMap(StreamMeta.init), meta.node != nodeID
                else { continue }
                pending.append(
                    (field, StreamSnapshot(key: key, kind: meta.kind, role: meta.role, timestampMs: meta.lastMs, text: [])))
            }
            if pending.isEmpty { return [] }
            let texts = try c.pipeline(pending.map { [Array("GET".utf8), keys.streamText(session, field: $0.field)] })
            var out: [StreamSnapshot] = []
            for (p, reply) in zip(pending, texts) {
                guard case .string(let text) = reply else { continue }
                var s = p.snapshot
                s.text = text
                out.append(s)
            }
            return out
        }
        return found ?? []
    }

    // MARK: writer thread

    /// The commands of queued ephemeral events and stream closes, in the order they were queued (ephemeral events
    /// first: a close follows its stream's deltas).
    func streamCommands(_ events: [EphemeralPublish], closes: [(String, StreamKey)]) -> [[[UInt8]]] {
        var commands: [[[UInt8]]] = []
        commands.reserveCapacity(events.count * 6 + closes.count * 3)
        let node = Array(nodeID.utf8)
        let ttl = Array(String(streamTTLMs).utf8)
        for e in events {
            var payload: [UInt8] = Array("e ".utf8) + node
            if let s = e.stream {
                let field = RedisKeys.streamField(s.key)
                let textKey = keys.streamText(e.session, field: field)
                let index = Array(keys.streamIndex(e.session).utf8)
                let ms = Array(String(s.timestampMs).utf8)
                commands.append([Array("APPEND".utf8), textKey, s.text])
                commands.append([Array("PEXPIRE".utf8), textKey, ttl])
                commands.append([
                    Array("HSET".utf8), index, field,
                    Array(StreamMeta(lastMs: s.timestampMs, node: nodeID, role: s.role, kind: s.kind).text.utf8),
                ])
                commands.append([Array("PEXPIRE".utf8), index, ttl])
                commands.append([Array("ZADD".utf8), Array(keys.streamSessions.utf8), Array("NX".utf8), ms, Array(e.session.utf8)])
                payload += Array(" \(s.endOffset) ".utf8) + field
            } else {
                payload += Array(" -".utf8)
            }
            payload.append(32)
            payload += e.frame
            commands.append([Array("PUBLISH".utf8), Array(keys.channel(e.session).utf8), payload])
        }
        for (session, key) in closes {
            let field = RedisKeys.streamField(key)
            commands.append([Array("DEL".utf8), keys.streamText(session, field: field), keys.streamClaim(session, field: field)])
            commands.append([Array("HDEL".utf8), Array(keys.streamIndex(session).utf8), field])
        }
        return commands
    }

    /// Sends the queued ephemeral events and closes in one pipelined write. A command Redis refuses loses only that
    /// event's cross-node copy (counted); a connection error is thrown (the writer reconnects).
    func sendStreamCommands(
        _ events: [EphemeralPublish], closes: [(String, StreamKey)],
        presence: [(session: String, key: PresenceKey, conns: Int)] = [], on c: RedisConnection
    ) throws(RedisError) {
        let commands = streamCommands(events, closes: closes) + presenceCommands(presence)
        guard !commands.isEmpty else { return }
        let replies = try c.pipeline(commands)
        let refused = replies.filter { $0.errorMessage != nil }.count
        if refused > 0 {
            metrics.clusterEphemeralDropped.increment(by: Int64(refused))
            logger.warning(
                "redis refused ephemeral/stream commands",
                metadata: ["refused": "\(refused)", "first": "\(replies.first { $0.errorMessage != nil }?.errorMessage ?? "")"])
        }
    }

    // MARK: subscriber thread

    /// One scan for idle streams (at most 32 sessions): claims what is idle and returns it for the service thread.
    func claimIdleStreams(_ c: RedisConnection) throws(RedisError) -> [StoreUpdate] {
        let now = WallClock.nowMs()
        let due = try c.command([
            "ZRANGEBYSCORE", keys.streamSessions, "-inf", "\(now - streamIdleMs)", "LIMIT", "0", "32",
        ]).items ?? []
        var out: [StoreUpdate] = []
        for case .string(let raw) in due {
            let session = String(decoding: raw, as: UTF8.self)
            let reply = try c.command([
                "EVAL", RedisStreamScripts.claim, "2", keys.streamIndex(session), keys.streamSessions, "\(now)",
                "\(streamIdleMs)", "\(streamClaimMs)", keys.sessionKeyPrefix(session), session,
            ])
            if let e = reply.errorMessage {
                logger.warning("redis stream claim failed", metadata: ["session": "\(session)", "error": "\(e)"])
                continue
            }
            let items = reply.items ?? []
            var claimed: [StreamSnapshot] = []
            var i = 0
            while i + 2 < items.count {
                defer { i += 3 }
                guard case .string(let field) = items[i], let key = RedisKeys.streamKey(field: field),
                    let meta = items[i + 1].text.flatMap(StreamMeta.init), case .string(let text) = items[i + 2]
                else { continue }
                claimed.append(StreamSnapshot(key: key, kind: meta.kind, role: meta.role, timestampMs: meta.lastMs, text: text))
            }
            if !claimed.isEmpty { out.append(.streamsIdle(session: session, streams: claimed)) }
        }
        return out
    }

    /// `e <node> <end offset> <sub length>:<sub>:<id> <frame>` or `e <node> - <frame>` (nil if malformed or not an
    /// ephemeral push); `node` is the publishing node.
    static func parseEphemeralPush(_ payload: [UInt8]) -> (node: [UInt8], frame: [UInt8], stream: StreamPosition?)? {
        guard payload.count > 2, payload[0] == UInt8(ascii: "e"), payload[1] == 32 else { return nil }
        var i = 2
        func word() -> ArraySlice<UInt8>? {
            guard let end = payload[i...].firstIndex(of: 32) else { return nil }
            defer { i = end + 1 }
            return payload[i..<end]
        }
        guard let node = word(), let offset = word() else { return nil }
        if offset.elementsEqual("-".utf8) { return (Array(node), Array(payload[i...]), nil) }
        guard let end = Int(String(decoding: offset, as: UTF8.self)),
            let colon = payload[i...].firstIndex(of: UInt8(ascii: ":")),
            let subLength = Int(String(decoding: payload[i..<colon], as: UTF8.self)), subLength >= 0,
            colon + 1 + subLength < payload.count, payload[colon + 1 + subLength] == UInt8(ascii: ":"),
            let space = payload[(colon + 2 + subLength)...].firstIndex(of: 32),
            let key = RedisKeys.streamKey(field: Array(payload[i..<space]))
        else { return nil }
        return (Array(node), Array(payload[(space + 1)...]), StreamPosition(key: key, endOffset: end))
    }
}

/// A stream's entry in its session's stream index: `<last delta ms> <node> <role> <kind>` (none has a space).
struct StreamMeta {
    var lastMs: Int64
    var node: String
    var role: String
    var kind: String

    init(lastMs: Int64, node: String, role: String, kind: String) {
        self.lastMs = lastMs
        self.node = node
        self.role = role
        self.kind = kind
    }

    init?(_ text: String) {
        let parts = text.split(separator: " ", maxSplits: 3)
        guard parts.count == 4, let ms = Int64(parts[0]) else { return nil }
        self.init(lastMs: ms, node: String(parts[1]), role: String(parts[2]), kind: String(parts[3]))
    }

    var text: String { "\(lastMs) \(node) \(role) \(kind)" }
}

/// The claim of idle streams (one `EVAL` per session with streams that may be idle; every key is the session's, plus
/// the deployment's set of sessions with streams).
///
/// KEYS: the session's stream index, the set of sessions with streams. ARGV: now (ms), idle timeout (ms), claim time
/// (ms), the session's key prefix (`<prefix>:{S}:`), the session. For each stream idle for the timeout whose claim
/// key is free, sets the claim (`SET NX PX`) and returns field, meta and text. Then the session's score becomes its
/// oldest stream's last delta (claimed ones included, so an expired claim is found again), or the session leaves the
/// set when it has no stream left. The claim and text keys are built from the session's key prefix (they share its
/// hash tag, so its slot), not declared in KEYS: fine on one Redis server, which is what cluster mode runs on.
enum RedisStreamScripts {
    static let claim = """
        local all = redis.call('HGETALL', KEYS[1])
        local now = tonumber(ARGV[1])
        local idle = tonumber(ARGV[2])
        local out = {}
        local oldest = nil
        for i = 1, #all, 2 do
          local f = all[i]
          local v = all[i + 1]
          local last = tonumber(string.match(v, '^(%d+)')) or 0
          if last + idle <= now then
            if redis.call('SET', ARGV[4] .. 'sc:' .. f, '1', 'NX', 'PX', ARGV[3]) then
              local text = redis.call('GET', ARGV[4] .. 'st:' .. f)
              if text then
                table.insert(out, f)
                table.insert(out, v)
                table.insert(out, text)
              else
                redis.call('HDEL', KEYS[1], f)
              end
            end
          end
          if oldest == nil or last < oldest then oldest = last end
        end
        if oldest == nil then
          redis.call('ZREM', KEYS[2], ARGV[5])
        else
          redis.call('ZADD', KEYS[2], oldest, ARGV[5])
        end
        return out
        """
}
