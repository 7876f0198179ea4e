import Foundation

/// Which wire protocol the load speaks.
enum Target: String, Sendable {
    /// The gateway's protocol v1: hello with a JWT, join, publish with ids, acks (`ws://HOST:PORT/v1/ws`).
    case gateway
    /// The reference peers' room relay: `ws://HOST:PORT/room/R`, every text frame relayed to the other members.
    case room
}

/// What one run does.
enum Kind: String, Sendable {
    /// S subscribers in R sessions/rooms, P publishers open-loop at `rate` each: the steady-state fan-out run.
    case fanout
    /// `fanout` repeated at each of `rates` until delivered/s stops growing: the saturation point.
    case ramp
    /// S connections that only connect (and authenticate and join): connect rate, handshake latency, RSS per connection.
    case idle
    /// S subscribers disconnect, `behind` events are published per session, all reconnect at once with `since`.
    case resumeStorm = "resume-storm"
    /// Stable subscribers plus churners that connect, join, leave and come back while publishers publish.
    case churn
}

/// Every knob of a run. Scenario files set them; command-line flags override the file.
struct Options: Sendable {
    var name = "adhoc"
    var label = ""
    var kind = Kind.fanout
    var target = Target.gateway
    var host = "127.0.0.1"
    var port = 8080
    var path = "/v1/ws"
    var roomPrefix = "/room/"
    var secret = ""
    var serverPID: Int32 = 0
    /// More server processes (cluster nodes, Redis) whose CPU is added to `--server-pid`'s.
    var extraPIDs: [Int32] = []
    /// Several gateway nodes: connection i goes to ports[i % count] (overrides --port for plain connections).
    var ports: [Int] = []
    var procs = 1
    var subs = 1000
    var rooms = 10
    var pubs = 10
    var rate = 100.0
    var rates: [Double] = [100, 200, 400, 700, 1000, 1500, 2200, 3200]
    var size = 128
    var warmup = 2.0
    var duration = 10.0
    var drain = 2.0
    var inflight = 256
    var connectTimeout = 60.0
    var recvBuffer = 1 << 18
    var maxOutbound = 1 << 20
    var eventKind = "progress"
    var ephemeral = false
    /// Gateway publishes: `data` carries `"stream":"lt"` (a token stream per publisher, protocol v1.1 §3) and the
    /// filler goes in `"text"`.
    var stream = false
    /// Gateway publishes: the filler text is MIN-MAX bytes (varied per message) instead of padding `data` to `size`.
    var textBytes: ClosedRange<Int>? = nil
    /// ramp: stop when delivered/s grows less than this fraction over the best so far...
    var rampMinGrowth = 0.05
    /// ...or falls under this fraction of the offered deliveries/s.
    var rampMinRatio = 0.8
    /// resume-storm: events published per session while the subscribers are away.
    var behind = 100
    /// resume-storm: give up waiting for catch-up after this many seconds.
    var catchupTimeout = 30.0
    /// churn: connections that come and go (subscribers that stay are `subs`).
    var churnClients = 100
    var churnLifeMinMs = 200.0
    var churnLifeMaxMs = 1000.0
    var churnPauseMs = 50.0
    /// Print the human table on stderr.
    var table = true
    var peerName = ""
    var fsyncNote = ""
    var secretEnv = "GATEWAY_AUTH_HS256_SECRET"
    /// Count the server's socket-write syscalls over the window with `perf stat` (`auto`: when perf is installed).
    var syscalls = "auto"
    /// wss: the fraction of connections (spread evenly over the global numbering) that use TLS; 0 = plain ws.
    var tlsFraction = 0.0
    /// wss: the port of the TLS listener when it is not `port` (a mix needs both: the gateway's listeners are either
    /// TLS or plain); 0 = `port`.
    var tlsPort = 0

    var tls: Bool { tlsFraction > 0 }

    /// Whether connection `g` (global numbering: subscribers, publishers, churners) uses TLS.
    func usesTLS(_ g: Int) -> Bool {
        tlsFraction >= 1 || (tlsFraction > 0 && Int(Double(g + 1) * tlsFraction) > Int(Double(g) * tlsFraction))
    }

    /// Offered deliveries per second: publishers × rate × subscribers per room.
    var offeredDeliveries: Double {
        Double(pubs) * rate * (rooms > 0 ? Double(subs) / Double(rooms) : 0)
    }
}

enum OptionsError: Error, CustomStringConvertible {
    case bad(String)
    var description: String {
        switch self {
        case .bad(let m): return m
        }
    }
}

extension Options {
    /// Applies a scenario file (`loadtest/scenarios/*.json`): a flat object whose keys are the long flag names.
    mutating func apply(scenarioFile path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw OptionsError.bad("cannot read \(path)") }
        guard let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw OptionsError.bad("\(path): not a JSON object")
        }
        for (key, value) in obj.sorted(by: { $0.key < $1.key }) {
            if key == "description" || key.hasPrefix("_") { continue }
            let text: String
            switch value {
            case let a as [Any]: text = a.map { "\($0)" }.joined(separator: ",")
            case let n as NSNumber: text = n.stringValue  // booleans come out as "1"/"0" or "true"/"false"
            default: text = "\(value)"
            }
            try set(key, text)
        }
    }

    /// Sets one option by its long flag name (without `--`).
    mutating func set(_ key: String, _ v: String) throws {
        func int() throws -> Int {
            guard let x = Int(v) else { throw OptionsError.bad("--\(key): not an integer: \(v)") }
            return x
        }
        func dbl() throws -> Double {
            guard let x = Double(v) else { throw OptionsError.bad("--\(key): not a number: \(v)") }
            return x
        }
        func bool() -> Bool { v == "true" || v == "1" || v == "yes" }
        switch key {
        case "name": name = v
        case "label": label = v
        case "kind":
            guard let k = Kind(rawValue: v) else { throw OptionsError.bad("--kind: one of fanout ramp idle resume-storm churn") }
            kind = k
        case "target":
            guard let t = Target(rawValue: v) else { throw OptionsError.bad("--target: gateway or room") }
            target = t
        case "host": host = v
        case "port": port = try int()
        case "path": path = v
        case "room-prefix": roomPrefix = v
        case "secret": secret = v
        case "secret-env": secretEnv = v
        case "syscalls":
            guard ["auto", "perf", "off"].contains(v) else { throw OptionsError.bad("--syscalls: auto, perf or off") }
            syscalls = v
        case "server-pid": serverPID = Int32(try int())
        case "extra-pids":
            extraPIDs = try v.split(separator: ",").map {
                guard let x = Int32($0.trimmingCharacters(in: .whitespaces)) else { throw OptionsError.bad("--extra-pids: \(v)") }
                return x
            }
        case "ports":
            ports = try v.split(separator: ",").map {
                guard let x = Int($0.trimmingCharacters(in: .whitespaces)), (1...65535).contains(x) else {
                    throw OptionsError.bad("--ports: \(v)")
                }
                return x
            }
        case "procs": procs = try int()
        case "subs": subs = try int()
        case "rooms", "sessions": rooms = try int()
        case "pubs": pubs = try int()
        case "rate": rate = try dbl()
        case "rates":
            rates = try v.split(separator: ",").map {
                guard let x = Double($0.trimmingCharacters(in: .whitespaces)) else { throw OptionsError.bad("--rates: \(v)") }
                return x
            }
        case "size": size = try int()
        case "warmup": warmup = try dbl()
        case "duration": duration = try dbl()
        case "drain": drain = try dbl()
        case "inflight": inflight = try int()
        case "connect-timeout": connectTimeout = try dbl()
        case "recv-buffer": recvBuffer = try int()
        case "max-outbound": maxOutbound = try int()
        case "event-kind": eventKind = v
        case "ephemeral": ephemeral = bool()
        case "stream": stream = bool()
        case "text-bytes":
            let parts = v.split(separator: "-").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard parts.count == 2, parts[0] >= 0, parts[0] <= parts[1], parts[1] <= 65_536 else {
                throw OptionsError.bad("--text-bytes: expected MIN-MAX (0-65536), got \(v)")
            }
            textBytes = parts[0]...parts[1]
        case "ramp-min-growth": rampMinGrowth = try dbl()
        case "ramp-min-ratio": rampMinRatio = try dbl()
        case "behind": behind = try int()
        case "catchup-timeout": catchupTimeout = try dbl()
        case "churn-clients": churnClients = try int()
        case "churn-life-min-ms": churnLifeMinMs = try dbl()
        case "churn-life-max-ms": churnLifeMaxMs = try dbl()
        case "churn-pause-ms": churnPauseMs = try dbl()
        case "table": table = bool()
        case "peer": peerName = v
        case "note": fsyncNote = v
        case "tls": tlsFraction = bool() ? 1 : 0
        case "tls-fraction": tlsFraction = try dbl()
        case "tls-port": tlsPort = try int()
        default: throw OptionsError.bad("unknown option --\(key)")
        }
    }

    /// Checks bounds: every run must stop by itself, talk to loopback only, and fit the machine.
    func validate() throws {
        guard host == "127.0.0.1" || host.hasPrefix("127.") else {
            throw OptionsError.bad("--host: loopback (127.x.x.x) only")
        }
        guard (1...65535).contains(port) else { throw OptionsError.bad("--port: 1-65535") }
        guard (1...32).contains(procs) else { throw OptionsError.bad("--procs: 1-32") }
        guard subs >= 0, pubs >= 0, rooms >= 1, subs + pubs + churnClients > 0 else {
            throw OptionsError.bad("--subs/--pubs/--rooms out of range")
        }
        guard subs + pubs + churnClients <= 200_000 else { throw OptionsError.bad("at most 200,000 connections") }
        guard (40...60_000).contains(size) else { throw OptionsError.bad("--size: 40-60000 bytes") }
        guard rate >= 0, rate <= 1_000_000 else { throw OptionsError.bad("--rate: 0-1,000,000 per publisher") }
        guard duration > 0, duration <= 600, warmup >= 0, warmup <= 120, drain >= 0, drain <= 60 else {
            throw OptionsError.bad("--duration 0-600 s, --warmup 0-120 s, --drain 0-60 s")
        }
        guard connectTimeout > 0, connectTimeout <= 600, catchupTimeout > 0, catchupTimeout <= 600 else {
            throw OptionsError.bad("timeouts: 0-600 s")
        }
        guard recvBuffer >= 65536, recvBuffer <= 64 << 20 else { throw OptionsError.bad("--recv-buffer: 64 KiB-64 MiB") }
        guard inflight >= 1 else { throw OptionsError.bad("--inflight >= 1") }
        guard !rates.isEmpty, rates.count <= 64 else { throw OptionsError.bad("--rates: 1-64 steps") }
        guard (0...1).contains(tlsFraction) else { throw OptionsError.bad("--tls-fraction: 0-1") }
        guard (0...65535).contains(tlsPort) else { throw OptionsError.bad("--tls-port: 1-65535") }
        if target == .gateway {
            guard secret.utf8.count >= 32 else {
                throw OptionsError.bad("gateway target needs --secret (or $\(secretEnv)) of at least 32 bytes")
            }
        }
        if kind == .resumeStorm && target != .gateway {
            throw OptionsError.bad("resume-storm needs the gateway protocol (rooms have no resume)")
        }
    }
}

let usageText = """
    usage: gateway-loadtest [SCENARIO.json] [--flag value ...]
      A scenario file (loadtest/scenarios/*.json) sets defaults; flags override it.
      --target gateway|room      protocol: gateway v1 (hello/join/publish/ack) or the peers' /room/R relay
      --kind fanout|ramp|idle|resume-storm|churn
      --host 127.0.0.1 --port N  server (loopback only); --path /v1/ws (gateway) --room-prefix /room/ (room)
      --secret S                 HS256 secret for the gateway (default: $GATEWAY_AUTH_HS256_SECRET)
      --server-pid PID           sample the server's RSS and CPU from /proc/PID
      --extra-pids P1,P2         add these processes' CPU to the server's (more cluster nodes, Redis)
      --syscalls auto|perf|off   count the server's socket writes over the window with `perf stat` (auto: if
                                 /usr/bin/perf exists) and report sends/s and frames per send
      --ports P1,P2              cluster: connection i goes to P[i % n] (subscribers and publishers spread over nodes)
      --subs S --rooms R --pubs P --rate MSG/S/PUB --size BYTES
      --warmup S --duration S --drain S --procs N --inflight N --connect-timeout S
      --rates a,b,c              ramp steps (per-publisher rates)
      --behind N --catchup-timeout S                         resume-storm
      --churn-clients N --churn-life-min-ms --churn-life-max-ms --churn-pause-ms   churn
      --event-kind progress --ephemeral true|false           gateway publishes
      --stream true|false        gateway publishes: data {"t":T,"stream":"lt","text":"xx…"} (one token stream per
                                 publisher) instead of {"t":T,"p":"xx…"}
      --text-bytes MIN-MAX       gateway publishes: filler of MIN-MAX bytes, varied per message (instead of --size)
      --label TEXT --peer NAME --note TEXT                   copied into the JSON line
      --recv-buffer BYTES --max-outbound BYTES --table false
      --tls [true|false]         wss:// instead of ws://: TCP connect, TLS handshake, then the same upgrade and
                                 framing over TLS. The server's certificate is NOT verified (the gateway's self-signed
                                 dev certificate; loopback benchmarking only). handshake_us then spans TCP connect to
                                 101, tls_us TCP connect to TLS done; every connection makes a full handshake.
      --tls-fraction F           a mix: this fraction (0-1) of the connections over wss, the rest over ws
      --tls-port N               the wss connections go to this port (default --port); a mix needs a TLS and a plain
                                 listener, e.g. the gateway's listen.additional
    Output: one JSON line per run on stdout, a table on stderr.
    """
