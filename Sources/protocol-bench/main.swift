// Microbenchmark for the per-event JSON work on the gateway's data path: decoding a typical publish frame and
// encoding the outbound event frame. Build in release: `swift run -c release protocol-bench [iterations]`.
// Reports the best of several rounds (ns/op), which filters out scheduler noise on a shared 2-core machine.
import GatewayProtocol

let iterations = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 1_000_000 : 1_000_000
let rounds = 5

// A typical ~200-byte publish: chat message from a browser with a small object payload.
let publish = Array(
    #"{"type":"publish","session":"proj-42:chat.main","id":"msg-01J9Z3KQ7V8X","kind":"chat.message","data":{"text":"Deploy the staging build, please","thread":"t-881","mentions":["agent-7"],"reply_to":"m-77"}}"#
        .utf8
)
let limits = FrameLimits.default

/// Keeps results observable so the optimizer cannot delete the measured work.
nonisolated(unsafe) var sink = 0

func measure(_ name: String, bytes: Int, _ body: () -> Int) {
    let clock = ContinuousClock()
    var best = Double.infinity
    for _ in 0..<rounds {
        var acc = 0
        let elapsed = clock.measure {
            for _ in 0..<iterations { acc &+= body() }
        }
        sink &+= acc
        let (seconds, attoseconds) = elapsed.components
        let ns = (Double(seconds) * 1e9 + Double(attoseconds) / 1e9) / Double(iterations)
        best = min(best, ns)
    }
    let mbps = Double(bytes) / best * 1e9 / 1_048_576
    // Integer tenths: Double.rounded() would need libm, which this Foundation-free target does not link.
    let tenths = Int(best * 10 + 0.5)
    print("\(name): \(tenths / 10).\(tenths % 10) ns/op  (\(bytes) bytes, \(Int(mbps)) MiB/s)")
}

print("protocol-bench: \(iterations) iterations x \(rounds) rounds, best round")

measure("decode publish", bytes: publish.count) {
    switch ClientFrame.decode(publish, limits: limits) {
    case .success(.publish(let p)): return p.data.count
    default: return -1
    }
}

guard case .success(.publish(let decoded)) = ClientFrame.decode(publish, limits: limits) else {
    fatalError("benchmark input did not decode")  // programmer error in the fixed input above, not peer input
}
var frame: [UInt8] = []
frame.reserveCapacity(512)
let headroom = 16 + 10  // LWS_PRE on x86_64 Debian builds is 16; +10 for the largest WebSocket header
ServerFrame.appendEvent(
    into: &frame, session: decoded.session, seq: 1, id: decoded.id, kind: decoded.kind, sub: "user-1234",
    role: "user", timestampMs: 1_795_615_762_123, data: decoded.data)
let eventBytes = frame.count

measure("encode event (append into reused buffer)", bytes: eventBytes) {
    frame.removeAll(keepingCapacity: true)
    frame.append(contentsOf: repeatElement(0, count: headroom))
    return ServerFrame.appendEvent(
        into: &frame, session: decoded.session, seq: 123_456, id: decoded.id, kind: decoded.kind,
        sub: "user-1234", role: "user", timestampMs: 1_795_615_762_123, data: decoded.data)
}

measure("encode event (new buffer with headroom)", bytes: eventBytes) {
    ServerFrame.encodeEvent(
        headroom: headroom, session: decoded.session, seq: 123_456, id: decoded.id, kind: decoded.kind,
        sub: "user-1234", role: "user", timestampMs: 1_795_615_762_123, data: decoded.data
    ).count
}

measure("scan only (JSONScanner.scanObject)", bytes: publish.count) {
    switch JSONScanner().scanObject(publish) {
    case .success(let o): return o.members.count
    case .failure: return -1
    }
}

print("publish frame \(publish.count) bytes, event frame \(eventBytes) bytes, sink \(sink & 1)")
