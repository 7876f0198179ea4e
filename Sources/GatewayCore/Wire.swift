import Glibc
import Prometheus
import Foundation
import GatewayAuth
import GatewayConfig
import GatewayProtocol
import TranscriptLog

/// Server frames as payload bytes (JSON text) ready for the outbound queue.
enum Wire {
    static func welcome(conn: String, sub: String, role: String) -> [UInt8] {
        encode(.welcome(conn: conn, sub: sub, role: role))
    }
    static func joined(session: String, head: UInt64, epoch: String, trimmedFirst: UInt64?, reset: Bool) -> [UInt8] {
        encode(.joined(session: session, head: head, epoch: epoch, trimmedFirst: trimmedFirst, reset: reset))
    }
    static func left(session: String) -> [UInt8] { encode(.left(session: session)) }
    static func ack(id: String, session: String, seq: UInt64?, duplicate: Bool) -> [UInt8] {
        encode(.ack(id: id, session: session, seq: seq, duplicate: duplicate))
    }
    static func pong(id: String?) -> [UInt8] { encode(.pong(id: id)) }
    static func error(code: ErrorCode, message: String, ref: String?, session: String? = nil) -> [UInt8] {
        encode(.error(code: code, message: message, ref: ref, session: session))
    }

    private static func encode(_ frame: ServerFrame) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(128)
        frame.append(to: &out)
        return out
    }
}

/// Event frames, encoded once per event (never per subscriber).
enum EventEncoding {
    static func event(
        session: String, seq: UInt64?, id: String, kind: String, sub: String, role: String, timestampMs: Int64,
        data: [UInt8]
    ) -> [UInt8] {
        var out: [UInt8] = []
        ServerFrame.appendEvent(
            into: &out, session: session, seq: seq, id: id, kind: kind, sub: sub, role: role,
            timestampMs: timestampMs, data: data)
        return out
    }

    static func durableEvent(_ r: AppendRequest, seq: UInt64) -> [UInt8] {
        event(session: r.session, seq: seq, id: r.id, kind: r.kind, sub: r.sub, role: r.role, timestampMs: r.timestampMs, data: r.data)
    }

    static func record(_ r: TranscriptRecord) -> [UInt8] {
        event(session: r.session, seq: r.seq, id: r.id, kind: r.kind, sub: r.sub, role: r.role, timestampMs: r.timestampMs, data: r.data)
    }
}

/// Small JSON building for the HTTP endpoints (not on the hot path).
enum JSONText {
    enum Value {
        case string(String)
        case int(Int64)
        case raw([UInt8])
        case null
    }

    static func appendString(into out: inout [UInt8], _ s: String) {
        JSONWriter.appendString(s, to: &out)
    }

    static func appendObject(into out: inout [UInt8], _ members: [(String, Value)]) {
        out.append(UInt8(ascii: "{"))
        for (i, (key, value)) in members.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            appendString(into: &out, key)
            out.append(UInt8(ascii: ":"))
            switch value {
            case .string(let s): appendString(into: &out, s)
            case .int(let n): out.append(contentsOf: Array(String(n).utf8))
            case .raw(let bytes): out.append(contentsOf: bytes)
            case .null: out.append(contentsOf: Array("null".utf8))
            }
        }
        out.append(UInt8(ascii: "}"))
    }
}

/// Makes untrusted text safe for a log line: control characters and non-ASCII escapes, bounded length.
enum LogSafe {
    static func escape(_ s: String, max: Int = 200) -> String {
        var out = ""
        for scalar in s.unicodeScalars.prefix(max) {
            if scalar.value < 0x20 || scalar.value == 0x7f || (scalar.value >= 0x80 && scalar.value < 0xa0) {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

/// Maps the configuration (GatewayConfig has no dependency on GatewayAuth/TranscriptLog) to module settings.
enum AuthMapping {
    static func authConfiguration(_ c: GatewayConfiguration) -> AuthConfiguration {
        AuthConfiguration(
            hs256Secret: c.auth.hs256Secret, hs256KeyID: c.auth.hs256KeyID,
            publicKeys: c.auth.publicKeys.map {
                PublicKeyConfig(kid: $0.kid, algorithm: $0.algorithm == .rs256 ? .rs256 : .es256, pemPath: $0.pemPath)
            },
            leewaySeconds: c.auth.leewaySeconds, audience: c.auth.audience, issuer: c.auth.issuer,
            maxTokenBytes: c.auth.maxTokenBytes)
    }
}

enum StorageMapping {
    static func fsync(_ c: GatewayConfiguration) -> FsyncPolicy {
        switch c.fsync {
        case .always: return .always
        case .interval(let ms): return .interval(milliseconds: ms)
        case .never: return .never
        }
    }
}
