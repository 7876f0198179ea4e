import GatewayAuth
import GatewayClient
import GatewayTesting
import Testing

/// How the service thread coalesces under load (docs/architecture.md, "Write pacing and the read budget"), on a real
/// gateway and real sockets: the read budget and the frames each socket write carries.
@Suite("Coalescing", .timeLimit(.minutes(2)))
struct CoalescingTests {
    /// The read budget and coalesced writes (docs/architecture.md, "Write pacing and the read budget"): a publisher's
    /// burst of 300 publishes (~33 KB) is more than lws's one 2 KiB read per loop turn, so the gateway reads the socket
    /// again in the same turn (`gateway_extra_reads_total` > 0; it stays 0 with `limits.reads_per_turn` 1); every
    /// publish is acked and delivered once, in order; the writes carry more than one frame each on average.
    @Test func burstIsReadPastOneReadPerTurnAndDeliveredInOrder() async throws {
        for budget in [16, 1] {
            try await withGateway(settings: [
                "rate_limits.roles.agent.rate_per_second": "0", "limits.reads_per_turn": "\(budget)",
            ]) { gw in
                let sub = try await gw.client(.user, sub: "watcher", sessions: ["s"])
                _ = try sub.join("s", since: 0)
                let agent = try await gw.client(.agent, sub: "streamer", sessions: ["s"])
                var frames: [UInt8] = []
                for i in 0..<300 {
                    frames += Frames.text(#"{"type":"publish","session":"s","id":"b\#(i)","kind":"progress","data":{"step":\#(i),"note":"burst-burst-burst"}}"#)
                }
                try agent.ws.sendRaw(frames, timeout: .seconds(5))
                var acks = 0
                while acks < 300 { if try agent.next(timeout: .seconds(10)).string("type") == "ack" { acks += 1 } }
                var seqs: [Int] = []
                while seqs.count < 300 {
                    let m = try sub.next(timeout: .seconds(10))
                    if m.string("type") == "event", let seq = m.int("seq") { seqs.append(seq) }
                }
                #expect(seqs == Array(1...300), "every publish delivered once, in order")
                let extra = Probe.metric(gw.port, "gateway_extra_reads_total") ?? -1
                if budget > 1 {
                    #expect(extra > 0, "the burst was read past one read per turn (extra reads \(extra))")
                } else {
                    #expect(extra == 0, "reads_per_turn 1 is lws's own one read per turn (extra reads \(extra))")
                }
                let writes = Probe.metric(gw.port, "gateway_socket_writes_total") ?? 0
                let written = Probe.metric(gw.port, "gateway_frames_written_total") ?? 0
                #expect(writes > 0 && written > writes, "writes carried several frames: \(written) frames in \(writes) writes")
            }
        }
    }
}
