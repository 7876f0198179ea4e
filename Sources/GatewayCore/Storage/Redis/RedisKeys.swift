/// The Redis keys of one deployment (`redis.key_prefix`). Every per-session key carries the hash tag `{session}`
/// (session ids cannot contain braces), so a session's keys and channel share one Redis Cluster slot and one
/// script may touch them all (docs/scaling.md, "Keys").
struct RedisKeys: Sendable {
    let prefix: String

    /// HASH: `seq` (the session's head), `epoch`, `ts` (Unix ms of the latest event).
    func meta(_ session: String) -> String { "\(prefix):{\(session)}:m" }
    /// STREAM: one entry per durable event, entry id `<seq>-0`, field `f` = the event frame, `t` = Unix ms.
    func log(_ session: String) -> String { "\(prefix):{\(session)}:log" }
    /// HASH: one of the session's 64 dedupe buckets; field = the 8-byte fingerprint of (sub, id), value = seq.
    /// Small buckets stay in Redis's compact listpack encoding (~24 B per remembered id, docs/scaling.md).
    func dedupe(_ session: String, bucket: Int) -> String { "\(prefix):{\(session)}:d:\(bucket)" }
    static let dedupeBuckets = 64
    /// Pub/sub channel of the session's durable events (`<seq> <node> <ts> <frame>`).
    func channel(_ session: String) -> String { "\(prefix):{\(session)}:ch" }
    /// STRING: a token stream's text so far (UTF-8, appended per delta); field = ``streamField(_:)``.
    func streamText(_ session: String, field: [UInt8]) -> [UInt8] { Array(sessionKeyPrefix(session).utf8) + Array("st:".utf8) + field }
    /// STRING with a expiry: a node's claim of an idle stream (its finalize is under way).
    func streamClaim(_ session: String, field: [UInt8]) -> [UInt8] { Array(sessionKeyPrefix(session).utf8) + Array("sc:".utf8) + field }
    /// HASH: the session's open streams; field = ``streamField(_:)``, value = `<last delta ms> <node> <role> <kind>`.
    func streamIndex(_ session: String) -> String { "\(sessionKeyPrefix(session))sx" }
    /// ZSET of sessions with open streams, scored at or below their oldest stream's last delta (ms).
    var streamSessions: String { "\(prefix):streams" }
    /// HASH: presence in the session, per node and subject; field = ``presenceField(node:key:)``, value = that node's
    /// joined connections of that subject.
    func presence(_ session: String) -> String { "\(sessionKeyPrefix(session))pr" }

    /// A presence field: `<node length>:<node><role length>:<role><sub>` (node ids and subs may hold any character).
    static func presenceField(node: String, key: PresenceKey) -> [UInt8] {
        Array("\(node.utf8.count):\(node)\(key.role.utf8.count):\(key.role)\(key.sub)".utf8)
    }

    /// The node and subject of a ``presenceField(node:key:)`` (nil if malformed).
    static func presenceKey(field: [UInt8]) -> (node: String, key: PresenceKey)? {
        func part(_ from: Int) -> (String, Int)? {
            guard let colon = field[from...].firstIndex(of: UInt8(ascii: ":")),
                let n = Int(String(decoding: field[from..<colon], as: UTF8.self)), n >= 0, colon + 1 + n <= field.count
            else { return nil }
            return (String(decoding: field[(colon + 1)..<(colon + 1 + n)], as: UTF8.self), colon + 1 + n)
        }
        guard let (node, afterNode) = part(0), let (role, afterRole) = part(afterNode), afterRole < field.count else {
            return nil
        }
        return (node, PresenceKey(sub: String(decoding: field[afterRole...], as: UTF8.self), role: role))
    }

    /// `<prefix>:{S}:`, the start of every key of the session.
    func sessionKeyPrefix(_ session: String) -> String { "\(prefix):{\(session)}:" }

    /// A stream's field in its session's keys: `<sub length in bytes>:<sub>:<stream id>` (sub may hold any character;
    /// stream ids have no space).
    static func streamField(_ key: StreamKey) -> [UInt8] { Array("\(key.sub.utf8.count):\(key.sub):\(key.id)".utf8) }

    /// The stream of a ``streamField(_:)`` (nil if malformed).
    static func streamKey(field: [UInt8]) -> StreamKey? {
        guard let colon = field.firstIndex(of: UInt8(ascii: ":")),
            let n = Int(String(decoding: field[..<colon], as: UTF8.self)), n >= 0, colon + 1 + n < field.count,
            field[colon + 1 + n] == UInt8(ascii: ":")
        else { return nil }
        let id = String(decoding: field[(colon + 2 + n)...], as: UTF8.self)
        guard !id.isEmpty else { return nil }
        return StreamKey(sub: String(decoding: field[(colon + 1)..<(colon + 1 + n)], as: UTF8.self), id: id)
    }
    /// STRING: the cluster's epoch (created once with `SET NX`; a new one means Redis lost its data).
    var epoch: String { "\(prefix):epoch" }
    /// ZSET of live nodes, scored by their latest heartbeat (ms).
    var nodes: String { "\(prefix):nodes" }
    /// HASH of one node's subscriber counts per session (`<users> <agents> <operators>`), expiring.
    func members(node: String) -> String { "\(prefix):node:\(node):members" }
    /// The channel a node's subscriber connection probes itself on.
    func probe(node: String) -> String { "\(prefix):node:\(node):probe" }

    /// The session of a session channel name, or nil for any other channel.
    func session(ofChannel channel: String) -> String? {
        guard channel.hasPrefix(prefix + ":{"), channel.hasSuffix("}:ch") else { return nil }
        let start = channel.index(channel.startIndex, offsetBy: prefix.count + 2)
        let end = channel.index(channel.endIndex, offsetBy: -4)
        guard start < end else { return nil }
        return String(channel[start..<end])
    }

    /// The dedupe fingerprint of (sub, id): FNV-1a 64 over the length-prefixed pair, 8 bytes little-endian, and its
    /// bucket (the low 6 bits). Two different pairs of one session share a fingerprint with probability ~n²/2⁶⁵
    /// (n = ids remembered: about 3·10⁻¹² at 10,000). A pair is chosen by its publisher, and `sub` comes from a
    /// verified token, so a crafted collision can only make the crafter's own publish look like a duplicate.
    static func dedupeFingerprint(sub: String, id: String) -> (field: [UInt8], bucket: Int) {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        @inline(__always) func mix(_ b: UInt8) {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        for b in String(sub.utf8.count).utf8 { mix(b) }
        mix(0x3A)
        for b in sub.utf8 { mix(b) }
        for b in id.utf8 { mix(b) }
        let field = (0..<8).map { UInt8(truncatingIfNeeded: h >> (8 * UInt64($0))) }
        return (field, Int(h & UInt64(dedupeBuckets - 1)))
    }
}

/// The Lua script of one durable publish (one `EVALSHA`, pipelined; docs/scaling.md, "The publish script").
///
/// KEYS: meta, log, the pair's dedupe bucket. ARGV: epoch, dedupe fingerprint, event frame without seq, offset where
/// `,"seq":N` goes, channel, node id, timestamp (ms), dedupe window, bucket cap.
/// Returns `{1, seq}` for a new event, `{0, seq}` for a duplicate (nothing written).
///
/// `XADD` with the explicit id `<seq>-0` comes before any other write: Redis refuses an id at or below the
/// stream's last one, so a seq is never reused and a refused script changed nothing. A session whose meta is
/// missing continues after the stream's last entry. The dedupe index keeps at least the ids of the last `window`
/// seqs: when a bucket holds more than its cap (about twice its share), one pass over that bucket drops the ids
/// older than the window (amortized O(1) per publish).
enum RedisScripts {
    static let publish = """
        local seq = redis.call('HGET', KEYS[1], 'seq')
        if seq then
          local hit = redis.call('HGET', KEYS[3], ARGV[2])
          if hit then return {0, tonumber(hit)} end
          seq = tonumber(seq)
        else
          seq = 0
          local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
          if #last > 0 then seq = tonumber(string.match(last[1][1], '^(%d+)')) end
        end
        local s = seq + 1
        local ss = string.format('%d', s)
        local n = tonumber(ARGV[4])
        local frame = string.sub(ARGV[3], 1, n) .. ',"seq":' .. ss .. string.sub(ARGV[3], n + 1)
        redis.call('XADD', KEYS[2], ss .. '-0', 'f', frame, 't', ARGV[7])
        redis.call('HSET', KEYS[1], 'seq', ss, 'epoch', ARGV[1], 'ts', ARGV[7])
        redis.call('HSET', KEYS[3], ARGV[2], ss)
        local w = tonumber(ARGV[8])
        if redis.call('HLEN', KEYS[3]) > tonumber(ARGV[9]) then
          local all = redis.call('HGETALL', KEYS[3])
          local floor = s - w
          for i = 1, #all, 2 do
            if tonumber(all[i + 1]) <= floor then redis.call('HDEL', KEYS[3], all[i]) end
          end
        end
        redis.call('PUBLISH', ARGV[5], ss .. ' ' .. ARGV[6] .. ' ' .. ARGV[7] .. ' ' .. frame)
        return {1, s}
        """
}
