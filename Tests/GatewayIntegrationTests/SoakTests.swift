import Foundation
import GatewayAuth
import GatewayClient
import GatewayTesting
import Synchronization
import Testing
import TranscriptLogTesting
import TranscriptLog

#if canImport(Glibc)
    import Glibc
#endif

// Load, soak, slow consumer and crash under load (docs/reliability.md, "Load and soak"; shared/reliability.md S1,
// L1/K1, F1) against the real `gateway` executable as a child process, so the RSS and descriptor samples
// (/proc/PID/status, /proc/PID/fd) are the gateway's alone.
//
// Two profiles:
//   default (CI): short runs, loose latency bounds (each test well under a minute);
//   GATEWAY_SOAK=1: the goal's figures (1,000 connections, 100 sessions, 200 events/s, 30 minutes; slow consumer
//   for 5 minutes; kill -9 every 30 s x 10), strict bounds. GATEWAY_SOAK_MINUTES=N shortens the 30-minute soak.
// Exact commands are in docs/reliability.md. Every client is a blocking WebSocketClient on its own thread; the
// test's async context only polls and sleeps.

/// Profile figures.
struct SoakProfile: Sendable, CustomStringConvertible {
    var connections: Int
    var sessions: Int
    var publishers: Int
    var eventsPerSecond: Double
    var reconnectFraction: Double  // of readers...
    var reconnectPeriod: Double  // ...per this many seconds
    var seconds: Double
    var warmup: Double
    var padBytes: Int
    var kills: Int = 0
    var killEvery: Double = 0
    /// Events written into each session's log before the gateway starts (the soak then runs on top of them), so
    /// that the per-session dedupe windows (10,000 ids each, by contract) are already full: the steady state of a
    /// long-running gateway. With 0 the windows fill during the run and RSS grows with every stored event.
    var seedPerSession: Int = 0

    var description: String {
        "\(connections) connections (half wss), \(sessions) sessions, \(publishers) publishers, \(eventsPerSecond) events/s, "
            + "\(Int(reconnectFraction * 100))% reconnect per \(Int(reconnectPeriod)) s, \(Int(seconds)) s"
            + (kills > 0 ? ", kill -9 every \(Int(killEvery)) s x \(kills)" : "")
            + (seedPerSession > 0 ? ", on top of \(seedPerSession) seeded events per session" : "")
    }

    static let long = ProcessInfo.processInfo.environment["GATEWAY_SOAK"] == "1"

    static var soak: SoakProfile {
        if long {
            let minutes = Double(ProcessInfo.processInfo.environment["GATEWAY_SOAK_MINUTES"] ?? "") ?? 30
            let seed = Int(ProcessInfo.processInfo.environment["GATEWAY_SOAK_SEED"] ?? "") ?? 10_000
            return SoakProfile(
                connections: 1000, sessions: 100, publishers: 20, eventsPerSecond: 200, reconnectFraction: 0.05,
                reconnectPeriod: 60, seconds: minutes * 60, warmup: min(120, minutes * 60 / 5), padBytes: 900,
                seedPerSession: max(0, seed))
        }
        return SoakProfile(
            connections: 200, sessions: 20, publishers: 10, eventsPerSecond: 50, reconnectFraction: 0.05,
            reconnectPeriod: 10, seconds: 30, warmup: 10, padBytes: 900,
            seedPerSession: max(0, Int(ProcessInfo.processInfo.environment["GATEWAY_SOAK_SEED"] ?? "") ?? 0))
    }

    static var crash: SoakProfile {
        if long {
            return SoakProfile(
                connections: 1000, sessions: 100, publishers: 20, eventsPerSecond: 200, reconnectFraction: 0.05,
                reconnectPeriod: 60, seconds: 30 * 10 + 20, warmup: 10, padBytes: 900, kills: 10, killEvery: 30)
        }
        return SoakProfile(
            connections: 40, sessions: 4, publishers: 4, eventsPerSecond: 20, reconnectFraction: 0.05,
            reconnectPeriod: 10, seconds: 5 * 3 + 4, warmup: 2, padBytes: 200, kills: 3, killEvery: 5)
    }
}

/// A stop flag shared by the client threads (Atomic is noncopyable, so it lives in a class).
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
}

/// Monotonic nanoseconds, shared by every thread of the test process (publish stamps and receive times).
@inline(__always) func monotonicNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Cheap field access on the gateway's compact frames (fixed field order, no whitespace; docs/protocol.md §4).
enum Wire {
    static func raw(_ text: String, _ key: String) -> Substring? {
        guard let r = text.range(of: "\"\(key)\":") else { return nil }
        var rest = text[r.upperBound...]
        if rest.first == "\"" {
            rest = rest.dropFirst()
            return rest.prefix { $0 != "\"" }
        }
        return rest.prefix { $0 != "," && $0 != "}" }
    }
    static func type(_ text: String) -> Substring? {
        guard text.hasPrefix("{\"type\":\"") else { return nil }
        return text.dropFirst(9).prefix { $0 != "\"" }
    }
    static func uint(_ text: String, _ key: String) -> UInt64? { raw(text, key).flatMap { UInt64($0) } }
}

/// The gateway child process, restartable on the same two ports (ws and wss).
final class ChildGateway: @unchecked Sendable {
    let dataDir: String
    let workDir: String
    let tls: TestCertificates.Paths
    let extraEnv: [String: String]
    private let state = Mutex<(gateway: GatewayUnderTest?, ws: Int, wss: Int)>((nil, 0, 0))
    private let old = Mutex<[GatewayUnderTest]>([])

    init(extraEnv: [String: String] = [:]) throws {
        workDir = TestDirs.make("soak")
        dataDir = workDir + "/data"
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        tls = try TestCertificates.generate(in: workDir + "/tls")
        self.extraEnv = extraEnv
    }

    /// The gateway under test: the debug build next to the test bundle, or GATEWAY_SOAK_BINARY (e.g. a release
    /// build, for load figures: `swift build -c release --product gateway`).
    static let binary = ProcessInfo.processInfo.environment["GATEWAY_SOAK_BINARY"] ?? BuiltProduct.gateway

    var ports: (ws: Int, wss: Int) { state.withLock { ($0.ws, $0.wss) } }
    var pid: pid_t? { state.withLock { $0.gateway?.process?.pid } }
    var runner: ProcessRunner? { state.withLock { $0.gateway?.process } }
    var wsURL: String { "ws://127.0.0.1:\(ports.ws)/v1/ws" }
    var wssURL: String { "wss://127.0.0.1:\(ports.wss)/v1/ws" }

    /// Starts the gateway (ports 0 the first time, the same ports afterwards) and waits for both listeners.
    func start() throws {
        let (ws, wss) = ports
        let config = """
            {"listen":{"host":"127.0.0.1","port":\(ws),"additional":[{"host":"127.0.0.1","port":\(wss),"tls_cert":"\(tls.certificatePath)","tls_key":"\(tls.privateKeyPath)"}]}}
            """
        let configPath = workDir + "/gateway.json"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        var env = ["GATEWAY_LIMITS_MAX_CONNECTIONS_PER_SUB": "4"]
        for (k, v) in extraEnv { env[k] = v }
        let gateway = try GatewayUnderTest.launch(
            dataDir: dataDir, port: nil, environment: env, executable: Self.binary, arguments: ["--config", configPath],
            listeners: 2, timeout: .seconds(20))
        let wsPort = gateway.listeners.first { !$0.tls }?.port ?? 0
        let wssPort = gateway.listeners.first { $0.tls }?.port ?? 0
        state.withLock { $0 = (gateway, wsPort, wssPort) }
    }

    func kill9() throws {
        guard let gateway = state.withLock({ $0.gateway }) else { return }
        try gateway.kill()
        state.withLock { $0.gateway = nil }
        old.withLock { $0.append(gateway) }
    }

    /// SIGTERM and the exit (bounded); throws if the gateway did not exit with status 0.
    func stop() throws {
        guard let gateway = state.withLock({ $0.gateway }) else { return }
        state.withLock { $0.gateway = nil }
        old.withLock { $0.append(gateway) }
        try gateway.terminate()
    }

    /// Everything the gateway processes wrote to stderr.
    func stderr() -> String {
        let all = old.withLock { $0 } + [state.withLock { $0.gateway }].compactMap { $0 }
        return all.compactMap { $0.process?.stderr() }.joined(separator: "\n")
    }

    /// Stops the gateway (a failure was already reported by an explicit ``stop()``), then removes every
    /// directory.
    func remove() {
        try? stop()
        for gateway in old.withLock({ $0 }) { gateway.remove() }
        try? FileManager.default.removeItem(atPath: workDir)
    }
}

/// One sample of the gateway process.
struct ProcSample: Sendable {
    var t: Double  // seconds since the sampler started
    var rssKiB: Int
    var fds: Int
}

/// Samples the gateway's RSS and open descriptors every second on its own thread.
final class ProcSampler: @unchecked Sendable {
    private let samples = Mutex<[ProcSample]>([])
    private let running = Atomic<Bool>(true)
    private let done = DispatchSemaphore(value: 0)
    let start = monotonicNs()

    init(_ gateway: ChildGateway) {
        let t = Thread { [self] in
            while running.load(ordering: .relaxed) {
                if let pid = gateway.pid, let s = Self.sample(pid) {
                    let now = Double(monotonicNs() - start) / 1e9
                    samples.withLock { $0.append(ProcSample(t: now, rssKiB: s.0, fds: s.1)) }
                }
                usleep(1_000_000)
            }
            done.signal()
        }
        t.start()
    }

    static func sample(_ pid: pid_t) -> (Int, Int)? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return nil }
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
        return (kib, fds)
    }

    var now: Double { Double(monotonicNs() - start) / 1e9 }
    func all() -> [ProcSample] { samples.withLock { $0 } }
    /// Stops sampling and waits for the thread; idempotent.
    func stop() {
        if running.exchange(false, ordering: .relaxed) { done.wait() }
    }

    static func median(_ xs: [Int]) -> Int { xs.isEmpty ? 0 : xs.sorted()[xs.count / 2] }
}

/// Latency percentiles in milliseconds.
func percentile(_ xs: [UInt32], _ p: Double) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    return Double(s[min(s.count - 1, Int(Double(s.count) * p))]) / 1000
}

/// Connects, says hello, waits for welcome (``Peer/connect(url:token:tls:options:timeout:)``). Throws on anything
/// else.
func soakConnect(url: String, token: String, receiveBuffer: Int? = nil) throws -> WebSocketClient {
    var options = WebSocketClientOptions()
    if let receiveBuffer { options.receiveBufferSize = receiveBuffer }
    return try Peer.connect(url: url, token: token, tls: url.hasPrefix("wss") ? .insecure() : nil, options: options).ws
}

/// FNV-1a over (seq, id) pairs in order: a reader's view of a session, compared with the log's.
struct SeqHash: Equatable {
    var value: UInt64 = 0xcbf2_9ce4_8422_2325
    mutating func add(_ seq: UInt64, _ id: Substring) {
        for b in String(seq).utf8 { value = (value ^ UInt64(b)) &* 0x100_0000_01b3 }
        value = (value ^ 0x3a) &* 0x100_0000_01b3
        for b in id.utf8 { value = (value ^ UInt64(b)) &* 0x100_0000_01b3 }
        value = (value ^ 0x0a) &* 0x100_0000_01b3
    }
}

/// A reader: joined to one session, checks every event is exactly the next seq, reconnects and resumes with
/// `since` + `epoch` when asked to or when the connection drops (kill -9).
final class SoakReader: @unchecked Sendable {
    let index: Int
    let session: String
    let url: @Sendable () -> String
    let token: String
    let stopFlag: StopFlag
    let reconnectRequested = Atomic<Bool>(false)
    let lastSeen = Atomic<UInt64>(0)
    let finished = DispatchSemaphore(value: 0)
    // Owned by the reader thread until `finished` is signalled.
    var last: UInt64 = 0
    var epoch: String?
    var hash = SeqHash()
    var duplicates = 0
    var gaps = 0
    var resets = 0
    var reconnects = 0
    var connectFailures = 0
    var errors: [String] = []
    var latencies: [(t: UInt64, us: UInt32)] = []

    init(
        index: Int, session: String, token: String, stop: StopFlag, startAfter: UInt64 = 0,
        url: @escaping @Sendable () -> String
    ) {
        self.index = index
        self.session = session
        self.token = token
        self.stopFlag = stop
        self.url = url
        last = startAfter
        lastSeen.store(startAfter, ordering: .relaxed)
    }

    func start() {
        let t = Thread { [self] in
            run()
            finished.signal()
        }
        t.stackSize = 256 << 10
        t.start()
    }

    private func run() {
        var ws: WebSocketClient?
        var liveFrom: UInt64 = 0  // events above this seq are live (latency counted); replayed ones are not
        var firstConnect = true
        while !stopFlag.isSet {
            if ws == nil {
                do {
                    let c = try soakConnect(url: url(), token: token)
                    var join = #"{"type":"join","session":"\#(session)","since":\#(last)"#
                    if let epoch { join += #","epoch":"\#(epoch)""# }
                    try c.sendText(join + "}")
                    ws = c
                    if !firstConnect { reconnects += 1 }
                    firstConnect = false
                    liveFrom = UInt64.max
                } catch {
                    connectFailures += 1
                    usleep(UInt32.random(in: 50_000...150_000))
                    continue
                }
            }
            if reconnectRequested.exchange(false, ordering: .relaxed) {
                try? ws?.sendClose(code: 1000)
                ws?.close()
                ws = nil
                continue
            }
            do {
                guard case .text(let text) = try ws!.receive(timeout: .milliseconds(200)) else { continue }
                switch Wire.type(text) {
                case "event":
                    guard let seq = Wire.uint(text, "seq"), let id = Wire.raw(text, "id") else {
                        errors.append("event without seq/id: \(text.prefix(200))")
                        continue
                    }
                    if seq <= last {
                        duplicates += 1
                        if errors.count < 20 { errors.append("duplicate/out-of-order seq \(seq) after \(last)") }
                        continue
                    }
                    if seq != last + 1 {
                        gaps += 1
                        if errors.count < 20 { errors.append("gap: seq \(seq) after \(last)") }
                    }
                    last = seq
                    hash.add(seq, id)
                    lastSeen.store(seq, ordering: .relaxed)
                    if seq > liveFrom, let dataRange = text.range(of: "\"data\":{\"t\":") {
                        let digits = text[dataRange.upperBound...].prefix { $0.isNumber }
                        if let t = UInt64(digits) {
                            let now = monotonicNs()
                            latencies.append((t, UInt32(clamping: (now &- t) / 1000)))
                        }
                    }
                case "joined":
                    if Wire.raw(text, "reset") == "true" {
                        resets += 1
                        errors.append("unexpected reset: \(text)")
                    }
                    if let e = Wire.raw(text, "epoch") {
                        if let epoch, epoch != String(e) { errors.append("epoch changed \(epoch) -> \(e)") }
                        epoch = String(e)
                    }
                    liveFrom = Wire.uint(text, "head") ?? 0
                case "error":
                    if errors.count < 20 { errors.append("error frame: \(text)") }
                default:
                    break
                }
            } catch let e as GatewayClientError where e.isTimeout {
                continue
            } catch {
                // Dropped (kill -9, close): resume from `last`.
                ws?.close()
                ws = nil
                usleep(UInt32.random(in: 20_000...80_000))
            }
        }
        ws?.close()
    }
}

/// Acked events by session: seq -> id. Conflicting acks are recorded as errors.
final class AckBook: @unchecked Sendable {
    private let book = Mutex<(acks: [String: [UInt64: String]], ids: [String: UInt64], errors: [String], duplicates: Int)>(([:], [:], [], 0))

    func record(session: String, seq: UInt64, id: String, duplicate: Bool) {
        book.withLock { b in
            if duplicate { b.duplicates += 1 }
            if let other = b.acks[session]?[seq], other != id {
                b.errors.append("seq \(seq) of \(session) acked for \(other) and \(id)")
            }
            if let prev = b.ids[session + "/" + id], prev != seq {
                b.errors.append("\(id) acked with seq \(prev) and \(seq)")
            }
            b.acks[session, default: [:]][seq] = id
            b.ids[session + "/" + id] = seq
        }
    }
    var acks: [String: [UInt64: String]] { book.withLock { $0.acks } }
    var errors: [String] { book.withLock { $0.errors } }
    var duplicates: Int { book.withLock { $0.duplicates } }
    var count: Int { book.withLock { $0.ids.count } }
}

/// A publisher (agent): publishes durable events at a fixed rate round-robin over its sessions, one at a time,
/// and retries the same id (idempotent publish) across drops until it is acked.
final class SoakPublisher: @unchecked Sendable {
    let index: Int
    let sessions: [String]
    let rate: Double
    let pad: String
    let token: String
    let url: @Sendable () -> String
    let stopFlag: StopFlag
    let book: AckBook
    let finished = DispatchSemaphore(value: 0)
    var published = 0
    var retries = 0
    var errors: [String] = []
    var ackLatencies: [UInt32] = []

    init(index: Int, sessions: [String], rate: Double, padBytes: Int, token: String, book: AckBook, stop: StopFlag, url: @escaping @Sendable () -> String) {
        self.index = index
        self.sessions = sessions
        self.rate = rate
        self.pad = String(repeating: "x", count: padBytes)
        self.token = token
        self.book = book
        self.stopFlag = stop
        self.url = url
    }

    func start() {
        let t = Thread { [self] in
            run()
            finished.signal()
        }
        t.stackSize = 256 << 10
        t.start()
    }

    private func run() {
        var ws: WebSocketClient?
        let interval = UInt64(1e9 / rate)
        var next = monotonicNs() + UInt64.random(in: 0..<interval)
        var n = 0
        while !stopFlag.isSet {
            let now = monotonicNs()
            if now < next {
                usleep(UInt32(min(100_000, (next - now) / 1000)))
                continue
            }
            // Behind schedule by more than a second (the gateway was down): skip, do not burst.
            next = max(next + interval, now > next + 1_000_000_000 ? now : 0)
            let session = sessions[n % sessions.count]
            let id = "p\(index)-\(n)"
            let frame = #"{"type":"publish","session":"\#(session)","id":"\#(id)","kind":"progress","data":{"t":\#(now),"n":\#(n),"pad":"\#(pad)"}}"#
            n += 1
            var attempts = 0
            while true {
                attempts += 1
                if attempts > 1 { retries += 1 }
                if attempts > 600 {
                    errors.append("gave up on \(id)")
                    break
                }
                if ws == nil {
                    ws = try? soakConnect(url: url(), token: token)
                    if ws == nil {
                        usleep(100_000)
                        if stopFlag.isSet && attempts > 100 { break }
                        continue
                    }
                }
                do {
                    let sent = monotonicNs()
                    try ws!.sendText(frame)
                    var outcome: Bool?  // true = acked, false = retry
                    while outcome == nil {
                        guard case .text(let text) = try ws!.receive(timeout: .seconds(10)) else { continue }
                        guard Wire.raw(text, "id") == id[...] || Wire.raw(text, "ref") == id[...] else { continue }
                        if Wire.type(text) == "ack", let seq = Wire.uint(text, "seq") {
                            book.record(session: session, seq: seq, id: id, duplicate: Wire.raw(text, "duplicate") == "true")
                            ackLatencies.append(UInt32(clamping: (monotonicNs() - sent) / 1000))
                            outcome = true
                        } else if Wire.type(text) == "error", Wire.raw(text, "code") == "unavailable" {
                            usleep(50_000)
                            outcome = false
                        } else {
                            errors.append("publish \(id): \(text.prefix(200))")
                            outcome = true
                        }
                    }
                    if outcome == true {
                        published += 1
                        break
                    }
                } catch {
                    ws?.close()
                    ws = nil
                }
            }
        }
        ws?.close()
    }
}

/// The full result of a load run.
struct SoakResult {
    var acked = 0
    var lost = 0
    var duplicates = 0
    var outOfOrder = 0
    var readerErrors: [String] = []
    var publisherErrors: [String] = []
    var latencyP50 = 0.0
    var latencyP99 = 0.0
    var ackP99 = 0.0
    var reconnects = 0
    var rssDrift = 0.0
    /// RSS growth between the two windows divided by the events stored in between (the log's in-memory index costs
    /// 8 bytes per event, plus ~130 bytes per event while the session's 10,000-entry dedupe window fills).
    var rssBytesPerEvent = 0.0
    var fdDrift = 0.0
    var rssMiB: (Double, Double) = (0, 0)
    var fds: (Int, Int) = (0, 0)
    var restartSeconds: [Double] = []
    /// kill -9 -> both listeners up (log opened and verified), per restart.
    var listenSeconds: [Double] = []
    var summary = ""
}

/// Runs one load profile against a child gateway: readers, publishers, reconnects, optional kill -9 schedule,
/// then drains and checks every session against the log.
func runSoak(_ p: SoakProfile, label: String) async throws -> SoakResult {
    var rl = rlimit()
    getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
    }
    let gw = try ChildGateway()
    defer { gw.remove() }
    let sessions = (0..<p.sessions).map { "soak-\($0)" }
    let seed = UInt64(p.seedPerSession)
    if seed > 0 { try TranscriptSeed.fill(directory: gw.dataDir, sessions: sessions, perSession: p.seedPerSession) }
    try gw.start()
    let sampler = ProcSampler(gw)
    let stopPublishers = StopFlag()
    let stopReaders = StopFlag()
    // On any early exit: client threads stop (they would otherwise retry forever), then the gateway goes.
    defer {
        stopPublishers.set()
        stopReaders.set()
        sampler.stop()
    }
    let book = AckBook()
    let secret = GatewayEnvironment.secret

    // Publishers: sessions spread round-robin.
    var publishers: [SoakPublisher] = []
    for i in 0..<p.publishers {
        let mine = sessions.enumerated().filter { $0.offset % p.publishers == i }.map(\.element)
        let token = try await TokenMinter.hs256(secret: secret, sub: "agent-\(i)", role: .agent, sessions: mine, tier: nil, ttlSeconds: 7200)
        let wss = i % 2 == 1
        publishers.append(
            SoakPublisher(
                index: i, sessions: mine.isEmpty ? [sessions[i % sessions.count]] : mine,
                rate: p.eventsPerSecond / Double(p.publishers), padBytes: p.padBytes, token: token, book: book,
                stop: stopPublishers, url: { wss ? gw.wssURL : gw.wsURL }))
    }
    var readers: [SoakReader] = []
    for i in 0..<(p.connections - p.publishers) {
        let session = sessions[i % sessions.count]
        let token = try await TokenMinter.hs256(secret: secret, sub: "reader-\(i)", role: .user, sessions: [session], tier: nil, ttlSeconds: 7200)
        let wss = i % 2 == 1
        readers.append(
            SoakReader(
                index: i, session: session, token: token, stop: stopReaders, startAfter: seed,
                url: { wss ? gw.wssURL : gw.wsURL }))
    }
    for r in readers { r.start() }
    // Let the readers connect before events flow (they would replay anyway; this keeps latency samples live).
    try await Task.sleep(for: .milliseconds(min(3000, 10 * readers.count)))
    for pub in publishers { pub.start() }

    // Load phase: reconnect schedule and kill schedule.
    let started = sampler.now
    var result = SoakResult()
    let perTick = Double(readers.count) * p.reconnectFraction / p.reconnectPeriod  // reconnects per second
    var owed = 0.0
    var nextKill = p.kills > 0 ? started + p.killEvery : .infinity
    var kills = 0
    while sampler.now - started < p.seconds {
        try await Task.sleep(for: .seconds(1))
        owed += perTick
        while owed >= 1 {
            readers.randomElement()?.reconnectRequested.store(true, ordering: .relaxed)
            owed -= 1
        }
        if sampler.now >= nextKill && kills < p.kills {
            try gw.kill9()
            let t0 = monotonicNs()
            try gw.start()
            result.listenSeconds.append(Double(monotonicNs() - t0) / 1e9)
            // Serving = a fresh client gets `welcome`.
            let probeToken = try await TokenMinter.hs256(secret: secret, sub: "probe", role: .operator, sessions: [], tier: nil, ttlSeconds: 600)
            var served: UInt64 = 0
            for _ in 0..<100 {
                if let c = try? soakConnect(url: gw.wsURL, token: probeToken) {
                    c.close()
                    served = monotonicNs()
                    break
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            result.restartSeconds.append(served == 0 ? .infinity : Double(served - t0) / 1e9)
            kills += 1
            nextKill += p.killEvery
        }
    }
    let loadEnd = sampler.now
    stopPublishers.set()
    for pub in publishers {
        while pub.finished.wait(timeout: .now()) == .timedOut { try await Task.sleep(for: .milliseconds(50)) }
    }

    // Heads from the log (an operator join), then wait for every reader to reach its session's head.
    let opToken = try await TokenMinter.hs256(secret: secret, sub: "ops", role: .operator, sessions: [], tier: nil, ttlSeconds: 600)
    let op = try soakConnect(url: gw.wsURL, token: opToken)
    defer { op.close() }
    var heads: [String: UInt64] = [:]
    var logHash: [String: SeqHash] = [:]
    var logIDs: [String: [UInt64: String]] = [:]
    for s in sessions {
        try op.sendText(#"{"type":"join","session":"\#(s)","since":\#(seed)}"#)
        var head: UInt64 = 0
        var seen: UInt64 = seed
        var h = SeqHash()
        var ids: [UInt64: String] = [:]
        var idSet = Set<Substring>()
        var joined = false
        while !joined || seen < head {
            guard case .text(let text) = try op.receive(timeout: .seconds(10)) else { continue }
            if Wire.type(text) == "joined" {
                head = Wire.uint(text, "head") ?? 0
                joined = true
            } else if Wire.type(text) == "event", let seq = Wire.uint(text, "seq"), let id = Wire.raw(text, "id") {
                if seq != seen + 1 { result.outOfOrder += 1; result.readerErrors.append("log \(s): seq \(seq) after \(seen)") }
                if !idSet.insert(id).inserted { result.duplicates += 1; result.readerErrors.append("log \(s): id \(id) stored twice") }
                seen = seq
                h.add(seq, id)
                ids[seq] = String(id)
            }
        }
        try op.sendText(#"{"type":"leave","session":"\#(s)"}"#)
        heads[s] = head
        logHash[s] = h
        logIDs[s] = ids
    }
    let drainDeadline = sampler.now + 60
    while sampler.now < drainDeadline && readers.contains(where: { $0.lastSeen.load(ordering: .relaxed) < heads[$0.session]! }) {
        try await Task.sleep(for: .milliseconds(200))
    }
    stopReaders.set()
    for r in readers {
        while r.finished.wait(timeout: .now()) == .timedOut { try await Task.sleep(for: .milliseconds(20)) }
    }
    sampler.stop()
    try gw.stop()  // SIGTERM: the gateway must drain and exit 0

    // Acked events: every one in the log under the same seq.
    let acks = book.acks
    result.acked = book.count
    for (s, m) in acks {
        for (seq, id) in m where logIDs[s]?[seq] != id {
            result.lost += 1
            if result.readerErrors.count < 30 { result.readerErrors.append("acked \(s)#\(seq) \(id) is \(logIDs[s]?[seq] ?? "missing") in the log") }
        }
    }
    result.readerErrors += book.errors
    // Readers: each saw its session exactly as the log holds it.
    var lat: [UInt32] = []
    for r in readers {
        result.duplicates += r.duplicates
        result.outOfOrder += r.gaps
        result.reconnects += r.reconnects
        let head = heads[r.session] ?? 0
        if r.last < head {
            result.lost += Int(head - r.last)
            if result.readerErrors.count < 30 { result.readerErrors.append("reader \(r.index) stopped at \(r.last) of \(head)") }
        } else if r.hash != logHash[r.session] {
            result.outOfOrder += 1
            result.readerErrors.append("reader \(r.index): (seq, id) sequence differs from the log")
        }
        result.readerErrors += r.errors.prefix(3).map { "reader \(r.index): \($0)" }
        // Latency after warm-up only, and only outside the seconds around a kill.
        let warm = sampler.start + UInt64((started + p.warmup) * 1e9)
        lat += r.latencies.filter { $0.t >= warm }.map(\.us)
    }
    for pub in publishers { result.publisherErrors += pub.errors }
    result.latencyP50 = percentile(lat, 0.50)
    result.latencyP99 = percentile(lat, 0.99)
    result.ackP99 = percentile(publishers.flatMap(\.ackLatencies), 0.99)

    // RSS and fds after warm-up: the first 5 s after warm-up vs the last 5 s of the load phase.
    let samples = sampler.all()
    let early = samples.filter { $0.t >= started + p.warmup && $0.t < started + p.warmup + 5 }
    let late = samples.filter { $0.t >= loadEnd - 5 && $0.t <= loadEnd }
    if !early.isEmpty && !late.isEmpty {
        let r0 = ProcSampler.median(early.map(\.rssKiB)), r1 = ProcSampler.median(late.map(\.rssKiB))
        let f0 = ProcSampler.median(early.map(\.fds)), f1 = ProcSampler.median(late.map(\.fds))
        result.rssMiB = (Double(r0) / 1024, Double(r1) / 1024)
        result.fds = (f0, f1)
        result.rssDrift = Double(r1 - r0) / Double(max(r0, 1))
        let events = p.eventsPerSecond * max(1, (loadEnd - 2.5) - (started + p.warmup + 2.5))
        result.rssBytesPerEvent = Double(r1 - r0) * 1024 / events
        result.fdDrift = Double(f1 - f0) / Double(max(f0, 1))
    }
    let maxRSS = Double(samples.map(\.rssKiB).max() ?? 0) / 1024
    // Log recovery time at each start, from the gateway's start-up line (RecoveryReport.durationNanoseconds).
    let recoveries = gw.stderr().components(separatedBy: "durationNanoseconds: ").dropFirst().compactMap {
        Double($0.prefix { $0.isNumber }).map { $0 / 1e9 }
    }
    result.summary = """
        \(label): \(p)
          acked \(result.acked) (duplicate acks after retry \(book.duplicates)), lost \(result.lost), duplicates \(result.duplicates), out-of-order/gaps \(result.outOfOrder), reader reconnects \(result.reconnects)
          fan-out latency after warm-up p50 \(String(format: "%.2f", result.latencyP50)) ms p99 \(String(format: "%.2f", result.latencyP99)) ms (\(lat.count) samples); publish->ack p99 \(String(format: "%.2f", result.ackP99)) ms
          gateway RSS \(String(format: "%.1f", result.rssMiB.0)) -> \(String(format: "%.1f", result.rssMiB.1)) MiB (drift \(String(format: "%+.1f", result.rssDrift * 100))%, \(Int(result.rssBytesPerEvent)) B per event stored, max \(String(format: "%.1f", maxRSS)) MiB), fds \(result.fds.0) -> \(result.fds.1) (drift \(String(format: "%+.1f", result.fdDrift * 100))%)
          restarts (kill -9 -> listening): \(result.listenSeconds.map { String(format: "%.2f s", $0) }); (kill -9 -> welcome): \(result.restartSeconds.map { String(format: "%.2f s", $0) })
          log recovery at each start: \(recoveries.map { String(format: "%.2f s", $0) })
          gateway: \(ChildGateway.binary)
        """
    print(result.summary)
    if !result.readerErrors.isEmpty { print("  errors: \(result.readerErrors.prefix(20))") }
    if !result.publisherErrors.isEmpty { print("  publisher errors: \(result.publisherErrors.prefix(10))") }
    return result
}

@Suite("Load and soak", .serialized, .timeLimit(.minutes(SoakProfile.long ? 60 : 5)))
struct SoakTests {
    /// S1: one client stops reading while its session gets 100 events/s. The gateway closes it 4009 at its
    /// outbound cap, RSS stays bounded and flat, and the other readers' p99 latency stays near the baseline.
    @Test func slowConsumer() async throws {
        let long = SoakProfile.long
        let pad = long ? 900 : 2000
        let cap = long ? 4 << 20 : 256 << 10
        let gw = try ChildGateway(extraEnv: [
            "GATEWAY_LIMITS_OUTBOUND_BUFFER_BYTES": String(cap),
            "GATEWAY_LIMITS_MAX_MESSAGE_BYTES": String(64 << 10),
        ])
        defer { gw.remove() }
        try gw.start()
        let sampler = ProcSampler(gw)
        let secret = GatewayEnvironment.secret
        let stopPub = StopFlag()
        let stopReaders = StopFlag()
        defer {
            stopPub.set()
            stopReaders.set()
            sampler.stop()
        }
        let book = AckBook()
        let readerCount = 20
        var readers: [SoakReader] = []
        for i in 0..<readerCount {
            let token = try await TokenMinter.hs256(secret: secret, sub: "fast-\(i)", role: .user, sessions: ["s1"], tier: nil, ttlSeconds: 7200)
            readers.append(SoakReader(index: i, session: "s1", token: token, stop: stopReaders, url: { gw.wsURL }))
        }
        for r in readers { r.start() }
        try await Task.sleep(for: .seconds(1))
        let pubToken = try await TokenMinter.hs256(secret: secret, sub: "agent", role: .agent, sessions: ["s1"], tier: nil, ttlSeconds: 7200)
        let publisher = SoakPublisher(index: 0, sessions: ["s1"], rate: 100, padBytes: pad, token: pubToken, book: book, stop: stopPub, url: { gw.wsURL })
        publisher.start()

        // Baseline: no slow client.
        let baselineSeconds: Double = long ? 60 : 6
        let warm = monotonicNs() + 1_000_000_000
        try await Task.sleep(for: .seconds(baselineSeconds))
        let slowStart = monotonicNs()
        let baselineRSS = ProcSampler.median(sampler.all().suffix(Int(baselineSeconds) - 1).map(\.rssKiB))

        // The slow consumer: a tiny receive buffer and no reads. Repeated for the whole slow phase in the long
        // profile (each cycle: stall until closed, then read what arrived and the close code).
        let slowToken = try await TokenMinter.hs256(secret: secret, sub: "slow", role: .user, sessions: ["s1"], tier: nil, ttlSeconds: 7200)
        let slowPhase: Double = long ? 300 : 0
        var closeCodes: [UInt16?] = []
        var secondsToClose: [Double] = []
        var rssAtClose: [Int] = []
        var cycles = 0
        repeat {
            cycles += 1
            let slow = try soakConnect(url: gw.wsURL, token: slowToken, receiveBuffer: 4096)
            try slow.sendText(#"{"type":"join","session":"s1"}"#)
            slow.stopReading()
            let stalled = monotonicNs()
            let closesBefore = gw.stderr().components(separatedBy: "slow consumer closed").count
            let deadline = ContinuousClock.now + .seconds(long ? 240 : 40)
            while ContinuousClock.now < deadline && gw.stderr().components(separatedBy: "slow consumer closed").count == closesBefore {
                try await Task.sleep(for: .milliseconds(200))
            }
            secondsToClose.append(Double(monotonicNs() - stalled) / 1e9)
            rssAtClose.append(ProcSampler.sample(gw.pid ?? 0)?.0 ?? 0)
            // Now read: the backlog, then the close frame.
            closeCodes.append((try? slow.waitForClose(timeout: .seconds(10)))?.code)
            slow.close()
        } while Double(monotonicNs() - slowStart) / 1e9 < slowPhase

        // Keep the load on after the close: RSS must stay flat.
        let after: Double = long ? 60 : 5
        try await Task.sleep(for: .seconds(after))
        let slowEnd = monotonicNs()
        stopPub.set()
        while publisher.finished.wait(timeout: .now()) == .timedOut { try await Task.sleep(for: .milliseconds(50)) }
        stopReaders.set()
        for r in readers {
            while r.finished.wait(timeout: .now()) == .timedOut { try await Task.sleep(for: .milliseconds(20)) }
        }
        sampler.stop()
        try gw.stop()  // SIGTERM: the gateway must drain and exit 0

        let base = readers.flatMap { $0.latencies.filter { $0.t >= warm && $0.t < slowStart }.map(\.us) }
        let during = readers.flatMap { $0.latencies.filter { $0.t >= slowStart && $0.t < slowEnd }.map(\.us) }
        let p99Base = percentile(base, 0.99), p99Slow = percentile(during, 0.99)
        let samples = sampler.all()
        let maxRSS = samples.map(\.rssKiB).max() ?? 0
        let closeRSS = rssAtClose.last ?? 0
        let tail = samples.suffix(Int(after))
        let postMax = tail.map(\.rssKiB).max() ?? 0
        print("""
            slowConsumer (\(long ? "long" : "short") profile): 100 events/s of \(pad)-byte payloads to 21 readers, outbound cap \(cap / 1024) KiB, \(cycles) slow cycle(s)
              slow client closed with \(closeCodes.map { $0.map(String.init) ?? "none" }) after \(secondsToClose.map { String(format: "%.1f s", $0) }) of not reading
              other readers' p99: baseline \(String(format: "%.2f", p99Base)) ms (\(base.count) samples), with slow client \(String(format: "%.2f", p99Slow)) ms (\(during.count) samples); p50 \(String(format: "%.2f", percentile(base, 0.5))) -> \(String(format: "%.2f", percentile(during, 0.5))) ms
              gateway RSS: baseline \(baselineRSS / 1024) MiB, at close \(closeRSS / 1024) MiB, max \(maxRSS / 1024) MiB, last \(Int(after)) s max \(postMax / 1024) MiB
            """)
        #expect(closeCodes.allSatisfy { $0 == 4009 }, "slow client close codes: \(closeCodes)")
        #expect(readers.allSatisfy { $0.gaps == 0 && $0.duplicates == 0 }, "fast readers saw gaps or duplicates")
        #expect(publisher.errors.isEmpty, "\(publisher.errors.prefix(5))")
        // RSS bounded (the cap is per connection) and flat after the close.
        #expect(maxRSS - baselineRSS < 50 * 1024, "RSS grew \((maxRSS - baselineRSS) / 1024) MiB")
        #expect(postMax - closeRSS < (long ? 16 : 8) * 1024, "RSS kept growing after the close: \(closeRSS / 1024) -> \(postMax / 1024) MiB")
        // Latency: strict in the long profile, loose in CI (a shared 2-core machine; the numbers are printed).
        if long {
            #expect(p99Slow <= p99Base * 1.10 + 1, "p99 moved: \(p99Base) -> \(p99Slow) ms")
        } else {
            #expect(p99Slow <= max(p99Base * 3, p99Base + 50), "p99 moved: \(p99Base) -> \(p99Slow) ms")
        }
    }

    /// L1/K1 short profile: no lost acked event, no duplicate, no reordering; RSS and fds flat after warm-up.
    @Test func soak() async throws {
        let p = SoakProfile.soak
        let r = try await runSoak(p, label: "soak (\(SoakProfile.long ? "long" : "short") profile)")
        #expect(r.acked > Int(p.eventsPerSecond * p.seconds * 0.8), "acked only \(r.acked)")
        #expect(r.lost == 0 && r.duplicates == 0 && r.outOfOrder == 0, "\(r.readerErrors.prefix(10))")
        #expect(r.publisherErrors.isEmpty, "\(r.publisherErrors.prefix(10))")
        // Flat (< 10%) after warm-up. The log keeps an in-memory index entry per stored event (8 B) and a dedupe
        // window of 10,000 ids per session (~130 B each, by contract). The long profile seeds every session with
        // 10,000 events first (GATEWAY_SOAK_SEED), so the windows are full as in a long-running gateway and only the
        // index grows. Unseeded (GATEWAY_SOAK_SEED=0) the windows fill for the whole run (3,600 ids per session in
        // 30 minutes) and RSS grows with every stored event by design: then the bound is per event (a leaked frame
        // copy would be > 1 KiB per event here).
        if SoakProfile.long && p.seedPerSession < 10_000 {
            #expect(r.rssDrift < 0.10 || r.rssBytesPerEvent < 256, "RSS drift \(r.rssDrift * 100)% (\(r.rssMiB)), \(r.rssBytesPerEvent) B/event")
        } else {
            #expect(abs(r.rssDrift) < 0.10, "RSS drift \(r.rssDrift * 100)% (\(r.rssMiB))")
        }
        #expect(abs(r.fdDrift) < 0.10, "fd drift \(r.fdDrift * 100)% (\(r.fds))")
        if SoakProfile.long { #expect(r.latencyP99 < 100, "fan-out p99 \(r.latencyP99) ms") }
    }

    /// F1: kill -9 under load; the gateway serves within 2 s of the restart and every client resumes without loss.
    @Test func crashUnderLoad() async throws {
        let p = SoakProfile.crash
        let r = try await runSoak(p, label: "crash under load (\(SoakProfile.long ? "long" : "short") profile)")
        #expect(r.restartSeconds.count == p.kills)
        #expect(r.restartSeconds.allSatisfy { $0 <= 2.0 }, "restart to welcome: \(r.restartSeconds)")
        #expect(r.acked > Int(p.eventsPerSecond * p.seconds * 0.5), "acked only \(r.acked)")
        #expect(r.lost == 0 && r.duplicates == 0 && r.outOfOrder == 0, "\(r.readerErrors.prefix(10))")
        #expect(r.publisherErrors.isEmpty, "\(r.publisherErrors.prefix(10))")
    }
}
