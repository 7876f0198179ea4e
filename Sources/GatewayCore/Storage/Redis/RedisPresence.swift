import Foundation
import Logging
import Prometheus
import Synchronization

// Cluster mode: presence across nodes (protocol v1.1 §2 and §7; docs/scaling.md, "Presence across nodes").
//
// - Each node keeps its own subjects per session (SessionTable) and writes every change of a subject's local
//   connection count to the session's presence hash (`<prefix>:{S}:pr`, field `<node>`+`<role>`+`<sub>`
//   length-prefixed, value = count; HDEL at 0; PEXPIRE 24 h as a safety net) and publishes it on the session's
//   channel as `p <count> <field>` (durable pushes start with a digit, ephemeral ones with `e`). One pipelined batch
//   on the writer thread; the service thread never waits.
// - A node with a presence subscriber of S reads the hash once (``presence(session:)``: the fields of the other live
//   nodes, i.e. those in `<prefix>:nodes` seen in the last 15 s whose members hash names the same run, `#instance`)
//   and then applies the pushes; it re-reads the watched sessions every few seconds (bounded per tick), which also
//   drops the subjects of a node that died, or of its previous run after a restart under the same node id.
extension RedisEventStore {
    /// Safety-net expiry of a session's presence hash (refreshed by every change).
    static let presenceTTLMs = 86_400_000
    /// A node counts as live while its heartbeat (`<prefix>:nodes`) is this recent.
    static let nodeLivenessMs: Int64 = 15_000

    /// This run's name in presence fields and pushes.
    var presenceNode: String { "\(nodeID)#\(instance)" }

    func publishPresence(session: String, key: PresenceKey, conns: Int) {
        let accepted = shared.withLock { q -> Bool in
            guard !q.stopping, q.presenceOut.count < Self.maxOutgoing else { return false }
            q.presenceOut.append((session, key, conns))
            return true
        }
        if accepted {
            wakeWriter.signal()
        } else {
            metrics.clusterEphemeralDropped.increment()
        }
    }

    /// The session's presence hash and the live nodes in one pipeline, then the current run of each node found.
    func presence(session: String) -> [String: [PresenceKey: Int]]? {
        let now = WallClock.nowMs()
        let read = try? withReader { c throws(RedisError) -> [String: [PresenceKey: Int]] in
            let replies = try c.pipeline([
                ["HGETALL", keys.presence(session)].map { Array($0.utf8) },
                ["ZRANGEBYSCORE", keys.nodes, "\(now - Self.nodeLivenessMs)", "+inf"].map { Array($0.utf8) },
            ])
            guard replies.count == 2 else { return [:] }
            let live = Set((replies[1].items ?? []).compactMap(\.text))
            let fields = replies[0].items ?? []
            var found: [String: [PresenceKey: Int]] = [:]
            var i = 0
            while i + 1 < fields.count {
                defer { i += 2 }
                guard case .string(let field) = fields[i], let (run, key) = RedisKeys.presenceKey(field: field),
                    run != presenceNode, let n = fields[i + 1].text.flatMap({ Int($0) }), n > 0
                else { continue }
                found[run, default: [:]][key] = n
            }
            // A run counts while its node is live and still names it as its current run.
            let runs = found.keys.compactMap { run -> (run: String, node: String)? in
                guard let hash = run.lastIndex(of: "#") else { return nil }
                let node = String(run[..<hash])
                return live.contains(node) ? (run, node) : nil
            }
            if runs.isEmpty { return [:] }
            let current = try c.pipeline(runs.map { ["HGET", keys.members(node: $0.node), "#instance"].map { Array($0.utf8) } })
            var out: [String: [PresenceKey: Int]] = [:]
            for (r, reply) in zip(runs, current) where r.run == "\(r.node)#\(reply.text ?? "")" {
                out[r.run] = found[r.run]
            }
            return out
        }
        return read ?? [:]
    }

    /// The commands of queued presence changes: the hash, its expiry, then the push.
    func presenceCommands(_ changes: [(session: String, key: PresenceKey, conns: Int)]) -> [[[UInt8]]] {
        var commands: [[[UInt8]]] = []
        commands.reserveCapacity(changes.count * 3)
        for change in changes {
            let hash = Array(keys.presence(change.session).utf8)
            let field = RedisKeys.presenceField(node: presenceNode, key: change.key)
            if change.conns > 0 {
                commands.append([Array("HSET".utf8), hash, field, Array(String(change.conns).utf8)])
                commands.append([Array("PEXPIRE".utf8), hash, Array(String(Self.presenceTTLMs).utf8)])
            } else {
                commands.append([Array("HDEL".utf8), hash, field])
            }
            commands.append([
                Array("PUBLISH".utf8), Array(keys.channel(change.session).utf8),
                Array("p \(change.conns) ".utf8) + field,
            ])
        }
        return commands
    }

    /// `p <count> <field>` (nil if malformed).
    static func parsePresencePush(_ payload: [UInt8]) -> (node: String, key: PresenceKey, conns: Int)? {
        guard payload.count > 4, payload[0] == UInt8(ascii: "p"), payload[1] == 32,
            let space = payload[2...].firstIndex(of: 32),
            let conns = Int(String(decoding: payload[2..<space], as: UTF8.self)), conns >= 0,
            let (node, key) = RedisKeys.presenceKey(field: Array(payload[(space + 1)...]))
        else { return nil }
        return (node, key, conns)
    }
}
