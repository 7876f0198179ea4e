import Foundation
import TranscriptLog

/// Events written into a transcript data directory with the log library itself, before a gateway (or a test)
/// opens it. Every test target that seeds a log uses these, so the seeded records look the same everywhere.
public enum TranscriptSeed {
    /// A deterministic event: `n` selects the id (`m-<n>` unless `id` is given), the data and the time.
    /// - Parameters:
    ///   - session: Session id.
    ///   - n: Event number.
    ///   - id: Event id; `m-<n>` when `nil`.
    ///   - kind: Event kind.
    ///   - sub: Sender.
    ///   - role: Sender's role.
    ///   - timestampMs: Time; `1_700_000_000_000 + n` when `nil`.
    ///   - data: Payload; ``data(_:bytes:)`` of `n` and `dataBytes` when `nil`.
    ///   - dataBytes: Size of the generated payload.
    public static func event(
        _ session: String, _ n: Int, id: String? = nil, kind: String = "chat.message", sub: String = "agent-1",
        role: String = "agent", timestampMs: Int64? = nil, data: [UInt8]? = nil, dataBytes: Int = 40
    ) -> AppendRequest {
        AppendRequest(
            session: session, id: id ?? "m-\(n)", kind: kind, sub: sub, role: role,
            timestampMs: timestampMs ?? 1_700_000_000_000 + Int64(n), data: data ?? Self.data(n, bytes: dataBytes))
    }

    /// A JSON object of about `bytes` bytes, `{"n":<n>,"t":"aaaa…"}`, its padding letter chosen by `n`.
    public static func data(_ n: Int, bytes: Int) -> [UInt8] {
        let head = Array("{\"n\":\(n),\"t\":\"".utf8)
        let pad = max(0, bytes - head.count - 2)
        return head + [UInt8](repeating: UInt8(0x61 + n % 26), count: pad) + Array("\"}".utf8)
    }

    /// Writes `perSession` small `progress` events (ids `seed-0`, `seed-1`, …) into each session, interleaved
    /// across sessions, in batches of up to 1,000 per append, then syncs and closes the log (fsync `never` while
    /// writing: one sync at the end).
    /// - Parameters:
    ///   - directory: The data directory (created by the log if missing).
    ///   - sessions: Session ids.
    ///   - perSession: Events per session.
    /// - Throws: What `TranscriptLog` throws.
    public static func fill(directory: String, sessions: [String], perSession: Int) throws {
        var options = TranscriptLogOptions(directory: directory)
        options.fsync = .never
        let log = try TranscriptLog.open(options)
        let data = Array(#"{"seed":true}"#.utf8)
        let now = Int64(Date().timeIntervalSince1970 * 1_000)
        var batch: [AppendRequest] = []
        batch.reserveCapacity(1_000)
        for n in 0..<perSession {
            for s in sessions {
                batch.append(
                    event(s, n, id: "seed-\(n)", kind: "progress", sub: "seeder", timestampMs: now, data: data))
                if batch.count == 1_000 {
                    _ = try log.append(batch)
                    batch.removeAll(keepingCapacity: true)
                }
            }
        }
        if !batch.isEmpty { _ = try log.append(batch) }
        try log.sync()
        try log.close()
    }
}
