import CLoadTest
import Glibc
import Histogram

/// Where a connection is in its life.
enum ConnState: UInt8 {
    case idle, connecting, tlsHandshake, upgrading, authing, joining, ready, closed
}

/// What a connection is for.
enum ConnRole: UInt8 {
    /// Subscriber that stays for the whole run (counted in deliveries, ratio, latency, continuity).
    case sub
    /// Publisher (gateway: role `agent`, not joined; room: a member of its room).
    case pub
    /// churn: a subscriber that comes and goes.
    case churner
}

/// One connection. Plain data only (no ARC): the table is one manually allocated block.
struct Conn {
    var fd: Int32 = -1
    var state = ConnState.idle
    var role = ConnRole.sub
    var outArmed = false
    var closingByUs = false
    /// wss: this connection speaks TLS (fixed for the run: `Options.usesTLS(global)`).
    var tls = false
    /// wss: an SSL_read wanted the socket writable; EPOLLOUT is armed for it.
    var readWantsWrite = false
    var room: Int32 = 0
    /// Index into the token table (gateway) and the global connection numbering.
    var global: Int32 = 0
    var pubID: Int32 = 0
    var sent: Int64 = 0
    var phaseNs: Int64 = 0
    var tConnect: Int64 = 0
    /// Gateway: the last durable seq this connection holds for its session (-1: none yet).
    var lastSeq: Int64 = -1
    /// resume-storm: seq to reach; churn: when to act next.
    var target: Int64 = 0
    var caughtUpAt: Int64 = 0
    var nextAt: Int64 = 0
    /// Publisher: intended time of its next message (0: not computed yet; Int64.max: done).
    var nextDue: Int64 = 0
    var rbuf: UnsafeMutableRawPointer? = nil
    var rlen = 0
    var rcap = 0
    var obuf: UnsafeMutablePointer<UInt8>? = nil
    var olen = 0
    var ocap = 0
    /// Room mode continuity: last message number seen per publisher (indexed by publisher id), or nil.
    var lastN: UnsafeMutablePointer<Int64>? = nil
    /// wss: OpenSSL's connection (`SSL *`) while the socket is open, else nil.
    var ssl: OpaquePointer? = nil
}

/// Counters of one process; merged by the parent.
struct Stats {
    var connected: Int64 = 0
    var connErr: Int64 = 0
    var closedEarly: Int64 = 0
    var sentTotal: Int64 = 0
    var sentMeas: Int64 = 0
    var expectedMeas: Int64 = 0
    var rxTotal: Int64 = 0
    var rxMeas: Int64 = 0
    var rxOfMeasSends: Int64 = 0
    var rxPub: Int64 = 0
    var rxChurn: Int64 = 0
    var rxBad: Int64 = 0
    var rxOther: Int64 = 0
    var acksTotal: Int64 = 0
    var acksMeas: Int64 = 0
    var ackDuplicates: Int64 = 0
    var gaps: Int64 = 0
    var dups: Int64 = 0
    var churnGaps: Int64 = 0
    var churnDups: Int64 = 0
    var churnCycles: Int64 = 0
    var churnConnectErr: Int64 = 0
    var resets: Int64 = 0
    var maxBacklog: Int64 = 0
    var cpuMeasNs: Int64 = 0
    var replayed: Int64 = 0
    var reconnected: Int64 = 0
    var caughtUp: Int64 = 0
    var notCaughtUp: Int64 = 0
    var catchupTotalNs: Int64 = 0
    var lost: Int64 = 0
    var stableChecked: Int64 = 0
    var fragments: Int64 = 0
    var bytesIn: Int64 = 0
    var bytesOut: Int64 = 0
    var tlsDone: Int64 = 0
}

/// Phase times, CLOCK_MONOTONIC ns, 0 until the parent sends them.
struct Phases {
    var pubStart: Int64 = 0
    var measStart: Int64 = 0
    var measEnd: Int64 = 0
    var stop: Int64 = 0
}

/// The event loop of one process: epoll over non-blocking sockets, RFC 6455 client framing, both protocols.
struct Engine {
    let o: Options
    let procIndex: Int
    let conns: UnsafeMutablePointer<Conn>
    let n: Int
    let epfd: Int32
    let ctlFd: Int32
    let resFd: Int32
    /// Fires at the next publisher's intended send time (ns precision; epoll_wait's timeout has only ms).
    let timerFd: Int32
    var timerArmedAt: Int64 = 0
    let rx: UnsafeMutablePointer<UInt8>
    let rxCap: Int
    let scratch: UnsafeMutablePointer<UInt8>
    let scratchCap: Int
    let events: UnsafeMutablePointer<epoll_event>
    let maxEvents: Int32 = 1024
    let isGateway: Bool
    let tokens: [String]
    let sessionNames: [String]
    let sessionBytes: [StaticBytes]
    let subsInRoom: [Int64]
    /// Publishers' connection indices (the hot tick loop walks only these).
    var pubIdx: [Int] = []
    var churnIdx: [Int] = []
    var pending: [Int] = []
    var pendingHead = 0
    var inflight = 0
    var inflightLimit: Int
    var initialCount = 0
    var initialDone = 0
    var stats = Stats()
    var ph = Phases()
    var lat = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    var ackLat = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    var hsLat = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    var readyLat = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    var catchupLat = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    /// wss: TCP connect start → TLS handshake done, and TCP connect start → 101 of the TLS connections only.
    var tlsLat = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    var hsTLSLat = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    /// wss: the client context (`SSL_CTX *`), nil when no connection uses TLS.
    let tlsCtx: OpaquePointer?
    /// wss: version and cipher of the first TLS connection ("TLSv1.3 TLS_AES_256_GCM_SHA384").
    var tlsDescription = ""
    /// wss: connections whose read loop stopped at its round limit with bytes possibly held inside OpenSSL, where
    /// epoll cannot see them (read-ahead); read again after the next epoll_wait (which then does not block).
    var tlsAgain: [Int] = []
    var errors: [String: Int] = [:]
    var closeCodes: [Int: Int] = [:]
    var firstErrors: [String] = []
    var rng: UInt64
    var stopping = false
    var cpuAtStart: Int64 = 0
    var startedMeas = false
    var endedMeas = false
    var ctlLine: [UInt8] = []
    /// Per session (room): the highest seq acked to our publishers.
    var headBySession: [Int64]
    // resume-storm state
    var stormPhase = 0
    var stormT0: Int64 = 0
    var stormAcksWanted: Int64 = 0
    var stormDeadline: Int64 = 0
    var stormDoneAt: Int64 = 0

    // needles and fixed strings, allocated once
    let nSeq = StaticBytes("\"seq\":")
    let nDataT = StaticBytes("\"data\":{\"t\":")
    let nHead = StaticBytes("\"head\":")
    let nDuplicate = StaticBytes("\"duplicate\":true")
    let nReset = StaticBytes("\"reset\":true")
    let nHdrEnd = StaticBytes("\r\n\r\n")
    let publishMid: StaticBytes
    /// `,"p":"`, or `,"stream":"lt","text":"` with `--stream` / `,"text":"` with `--text-bytes`.
    let dataMid: StaticBytes
    let dataEnd = StaticBytes("\"}}")
    let nonce: String
    var prefixes: [StaticBytes] = []  // per publisher connection (indexed by conn index; empty for others)

    init(options: Options, procIndex k: Int, tokens: [String], nonce: String, ctlFd: Int32, resFd: Int32) {
        o = options
        procIndex = k
        isGateway = options.target == .gateway
        self.tokens = tokens
        self.nonce = nonce
        self.ctlFd = ctlFd
        self.resFd = resFd
        rxCap = options.recvBuffer
        rx = .allocate(capacity: rxCap + 64)
        scratchCap = max(options.size, options.textBytes?.upperBound ?? 0) + 1024
        scratch = .allocate(capacity: scratchCap)
        events = .allocate(capacity: 1024)
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        timerFd = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_NONBLOCK) | Int32(TFD_CLOEXEC))
        rng = UInt64(truncatingIfNeeded: monoNs()) ^ (UInt64(getpid()) << 32) | 1
        inflightLimit = options.inflight
        if options.tls {
            guard let ctx = clt_tls_ctx_new() else { fatal("TLS: \(String(cString: clt_tls_last_error()))") }
            tlsCtx = ctx
        } else {
            tlsCtx = nil
        }
        var rooms: [String] = []
        for r in 0..<options.rooms {
            rooms.append(options.target == .gateway ? "lt\(nonce)-\(r)" : "\(r)")
        }
        sessionNames = rooms
        sessionBytes = rooms.map { StaticBytes($0) }
        var sir = [Int64](repeating: 0, count: options.rooms)
        for i in 0..<options.subs { sir[i % options.rooms] += 1 }
        subsInRoom = sir
        headBySession = [Int64](repeating: 0, count: options.rooms)
        var mid = "\",\"kind\":\"\(options.eventKind)\","
        if options.ephemeral { mid += "\"ephemeral\":true," }
        mid += "\"data\":{\"t\":"
        publishMid = StaticBytes(mid)
        dataMid = StaticBytes(options.stream ? ",\"stream\":\"lt\",\"text\":\"" : options.textBytes != nil ? ",\"text\":\"" : ",\"p\":\"")

        // This process's share of the connections, round-robin over processes (like wsload).
        var list: [Conn] = []
        let procs = options.procs
        var g = k
        while g < options.subs {
            var c = Conn()
            c.role = .sub
            c.room = Int32(g % options.rooms)
            c.global = Int32(g)
            list.append(c)
            g += procs
        }
        var j = k
        while j < options.pubs {
            var c = Conn()
            c.role = .pub
            c.room = Int32(j % options.rooms)
            c.global = Int32(options.subs + j)
            c.pubID = Int32(j)
            c.phaseNs = options.rate > 0 ? Int64(1e9 / options.rate * Double(j) / Double(max(options.pubs, 1))) : 0
            list.append(c)
            j += procs
        }
        if options.kind == .churn {
            var h = k
            while h < options.churnClients {
                var c = Conn()
                c.role = .churner
                c.room = Int32(h % options.rooms)
                c.global = Int32(options.subs + options.pubs + h)
                list.append(c)
                h += procs
            }
        }
        for q in 0..<list.count { list[q].tls = options.usesTLS(Int(list[q].global)) }
        n = list.count
        conns = .allocate(capacity: max(n, 1))
        conns.initialize(from: list, count: n)
        for i in 0..<n {
            switch conns[i].role {
            case .pub: pubIdx.append(i)
            case .churner: churnIdx.append(i)
            case .sub: break
            }
            if options.kind == .churn && options.target == .room && conns[i].role == .sub {
                let ln = UnsafeMutablePointer<Int64>.allocate(capacity: max(options.pubs, 1))
                ln.initialize(repeating: -1, count: max(options.pubs, 1))
                conns[i].lastN = ln
            }
        }
        prefixes = (0..<n).map { i in
            let c = list[i]
            guard c.role == .pub else { return StaticBytes([]) }
            if options.target == .gateway {
                return StaticBytes(
                    "{\"type\":\"publish\",\"session\":\"\(rooms[Int(c.room)])\",\"id\":\"\(nonce)-\(c.pubID)-")
            }
            return StaticBytes(",\(c.pubID),")
        }
        for i in 0..<n { pending.append(i) }
        initialCount = n
    }

    // MARK: - the loop

    /// Runs the connect phase, reports it, takes the phase times and runs to the stop time. Returns at the end.
    mutating func run() {
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.u64 = UInt64.max
        epoll_ctl(epfd, EPOLL_CTL_ADD, ctlFd, &ev)
        ev.data.u64 = UInt64.max - 1
        epoll_ctl(epfd, EPOLL_CTL_ADD, timerFd, &ev)
        let connectDeadline = monoNs() + Int64(o.connectTimeout * 1e9)
        var reportedConnect = false
        var nextTick: Int64 = 0
        while true {
            var now = monoNs()
            if now >= nextTick {
                launchConnects(now)
                if !reportedConnect && (initialDone >= initialCount || now >= connectDeadline) {
                    reportedConnect = true
                    writeAll(resFd, Array("C \(stats.connected) \(stats.connErr)\n".utf8))
                }
                if !tick(now) { break }
                nextTick = now + 1_000_000
                now = monoNs()
            }
            let tmo = nextTick > now && tlsAgain.isEmpty ? Int32((nextTick - now + 999_999) / 1_000_000) : 0
            let got = epoll_wait(epfd, events, maxEvents, tmo)
            if !tlsAgain.isEmpty { retryTLSReads() }
            if got <= 0 { continue }
            for e in 0..<Int(got) {
                let ev = events[e]
                let idx = ev.data.u64
                if idx == UInt64.max {
                    readControl()
                    continue
                }
                if idx == UInt64.max - 1 {
                    var expirations: UInt64 = 0
                    _ = read(timerFd, &expirations, 8)
                    timerArmedAt = 0
                    let t = monoNs()
                    if o.rate > 0 && ph.pubStart > 0 && t >= ph.pubStart && o.kind != .resumeStorm { publishTick(t) }
                    continue
                }
                let i = Int(idx)
                let flags = ev.events
                if conns[i].state == .closed || conns[i].state == .idle { continue }
                if conns[i].state == .tlsHandshake {
                    tlsStep(i)
                    continue
                }
                if flags & (EPOLLOUT.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 {
                    if conns[i].state == .connecting {
                        onConnected(i)
                        continue
                    }
                    if conns[i].olen > 0 { flush(i) }
                }
                var readable = flags & (EPOLLIN.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0
                if conns[i].readWantsWrite && flags & EPOLLOUT.rawValue != 0 {
                    conns[i].readWantsWrite = false
                    readable = true
                }
                if readable && conns[i].state != .closed {
                    onReadable(i)
                }
            }
        }
        if !endedMeas {
            stats.cpuMeasNs = selfCPUNs() - cpuAtStart
        }
        finalChecks()
    }

    /// Once per millisecond: measurement boundaries, the publish schedule, churn and resume-storm steps. False: stop.
    mutating func tick(_ now: Int64) -> Bool {
        if ph.measStart > 0 && !startedMeas && now >= ph.measStart {
            startedMeas = true
            cpuAtStart = selfCPUNs()
        }
        if startedMeas && !endedMeas && now >= ph.measEnd {
            endedMeas = true
            stats.cpuMeasNs = selfCPUNs() - cpuAtStart
        }
        if o.kind == .resumeStorm {
            return stormTick(now)
        }
        if ph.pubStart > 0 && now >= ph.pubStart {
            if o.rate > 0 { publishTick(now) }
            if o.kind == .churn { churnTick(now) }
        }
        if ph.stop > 0 && now >= ph.stop { return false }
        return true
    }

    mutating func readControl() {
        var buf = [UInt8](repeating: 0, count: 512)
        let got = buf.withUnsafeMutableBytes { read(ctlFd, $0.baseAddress!, 512) }
        if got <= 0 {
            // parent gone: stop at once
            ph.stop = 1
            return
        }
        ctlLine.append(contentsOf: buf[0..<got])
        while let nl = ctlLine.firstIndex(of: 10) {
            let line = String(decoding: ctlLine[0..<nl], as: UTF8.self)
            ctlLine.removeFirst(nl + 1)
            let f = line.split(separator: " ")
            if f.first == "S", f.count == 5 {
                ph.pubStart = Int64(f[1]) ?? 0
                ph.measStart = Int64(f[2]) ?? 0
                ph.measEnd = Int64(f[3]) ?? 0
                ph.stop = Int64(f[4]) ?? 0
            } else if f.first == "Q" {
                ph.stop = 1
            }
        }
    }

    // MARK: - connections

    mutating func launchConnects(_ now: Int64) {
        while inflight < inflightLimit && pendingHead < pending.count {
            let i = pending[pendingHead]
            pendingHead += 1
            startConnect(i, now)
        }
        if pendingHead > 4096 && pendingHead == pending.count {
            pending.removeAll(keepingCapacity: true)
            pendingHead = 0
        }
    }

    mutating func startConnect(_ i: Int, _ now: Int64) {
        let c = conns + i
        c.pointee.state = .connecting
        c.pointee.tConnect = now
        c.pointee.rlen = 0
        c.pointee.olen = 0
        c.pointee.outArmed = false
        c.pointee.readWantsWrite = false
        c.pointee.closingByUs = false
        inflight += 1
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            connectFailed(i, "socket: \(String(cString: strerror(errno)))")
            return
        }
        c.pointee.fd = fd
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = in_port_t(UInt16(port(i)).bigEndian)
        inet_pton(AF_INET, o.host, &sa.sin_addr)
        let r = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r < 0 && errno != EINPROGRESS {
            let msg = "connect: \(String(cString: strerror(errno)))"
            close(fd)
            c.pointee.fd = -1
            connectFailed(i, msg)
            return
        }
        var ev = epoll_event()
        ev.events = EPOLLOUT.rawValue
        ev.data.u64 = UInt64(i)
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev)
    }

    /// A connection that never became ready.
    mutating func connectFailed(_ i: Int, _ why: String) {
        let c = conns + i
        if let s = c.pointee.ssl {
            clt_tls_free(s, 0)
            c.pointee.ssl = nil
        }
        if c.pointee.fd >= 0 {
            epoll_ctl(epfd, EPOLL_CTL_DEL, c.pointee.fd, nil)
            close(c.pointee.fd)
            c.pointee.fd = -1
        }
        c.pointee.state = .closed
        inflight -= 1
        if c.pointee.role == .churner && ph.pubStart > 0 {
            stats.churnConnectErr += 1
            c.pointee.nextAt = monoNs() + Int64(o.churnPauseMs * 1e6)
        } else {
            stats.connErr += 1
            initialDone += 1
        }
        if firstErrors.count < 5 { firstErrors.append(why) }
    }

    mutating func onConnected(_ i: Int) {
        let c = conns + i
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(c.pointee.fd, SOL_SOCKET, SO_ERROR, &err, &len)
        if err != 0 {
            connectFailed(i, "connect: \(String(cString: strerror(err)))")
            return
        }
        if c.pointee.tls {
            guard let ctx = tlsCtx, let s = clt_tls_new(ctx, c.pointee.fd) else {
                connectFailed(i, "tls: \(String(cString: clt_tls_last_error()))")
                return
            }
            c.pointee.ssl = s
            c.pointee.state = .tlsHandshake
            tlsStep(i)
            return
        }
        sendUpgrade(i)
    }

    /// wss: one step of the non-blocking client handshake (SSL_do_handshake), then the HTTP upgrade over TLS.
    mutating func tlsStep(_ i: Int) {
        let c = conns + i
        guard let s = c.pointee.ssl else { return }
        let r = Int(clt_tls_handshake(s))
        if r == 1 {
            tlsLat.record(UInt64(max((monoNs() - c.pointee.tConnect) / 1000, 1)))
            stats.tlsDone += 1
            if tlsDescription.isEmpty {
                var buf = [CChar](repeating: 0, count: 128)
                buf.withUnsafeMutableBufferPointer { b in
                    clt_tls_describe(s, b.baseAddress!, b.count)
                    tlsDescription = String(cString: b.baseAddress!)
                }
            }
            sendUpgrade(i)
            return
        }
        switch r {
        case CLT_TLS_WANT_READ: setEvents(i, EPOLLIN.rawValue)
        case CLT_TLS_WANT_WRITE: setEvents(i, EPOLLOUT.rawValue)
        case CLT_TLS_CLOSED: connectFailed(i, "tls handshake: connection closed")
        default: connectFailed(i, "tls \(String(cString: clt_tls_last_error()))")
        }
    }

    /// The server port of connection `i`: `--tls-port` for a TLS connection when set, else `--port`.
    func port(_ i: Int) -> Int {
        if conns[i].tls && o.tlsPort > 0 { return o.tlsPort }
        return o.ports.isEmpty ? o.port : o.ports[Int(conns[i].global) % o.ports.count]
    }

    @inline(__always) func setEvents(_ i: Int, _ events: UInt32) {
        var ev = epoll_event()
        ev.events = events
        ev.data.u64 = UInt64(i)
        epoll_ctl(epfd, EPOLL_CTL_MOD, conns[i].fd, &ev)
    }

    /// Sends the HTTP upgrade request (over TLS for wss) and waits for the 101.
    mutating func sendUpgrade(_ i: Int) {
        let c = conns + i
        c.pointee.state = .upgrading
        // Sec-WebSocket-Key: 16 random bytes, base64 (the accept hash is not checked: the 101 status is).
        let b64 = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var key = [UInt8]()
        key.reserveCapacity(24)
        var kb = [UInt8](repeating: 0, count: 18)
        for q in 0..<16 { kb[q] = UInt8(truncatingIfNeeded: nextRandom()) }
        var q = 0
        while q < 18 {
            let v = UInt32(kb[q]) << 16 | UInt32(kb[q + 1]) << 8 | UInt32(kb[q + 2])
            key.append(b64[Int(v >> 18)])
            key.append(b64[Int((v >> 12) & 63)])
            key.append(b64[Int((v >> 6) & 63)])
            key.append(b64[Int(v & 63)])
            q += 3
        }
        key[22] = 61
        key[23] = 61
        let path = isGateway ? o.path : "\(o.roomPrefix)\(sessionNames[Int(c.pointee.room)])"
        let req =
            "GET \(path) HTTP/1.1\r\nHost: \(o.host):\(port(i))\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(String(decoding: key, as: UTF8.self))\r\nSec-WebSocket-Version: 13\r\n"
            + "Origin: \(c.pointee.tls ? "https" : "http")://\(o.host)\r\n\r\n"
        let bytes = Array(req.utf8)
        setEvents(i, EPOLLIN.rawValue)
        bytes.withUnsafeBufferPointer { b in appendRaw(i, b.baseAddress!, b.count) }
        flush(i)
    }

    mutating func markReady(_ i: Int, _ now: Int64) {
        let c = conns + i
        c.pointee.state = .ready
        inflight -= 1
        readyLat.record(UInt64(max((now - c.pointee.tConnect) / 1000, 1)))
        if c.pointee.role == .churner && ph.pubStart > 0 {
            let span = max(o.churnLifeMaxMs - o.churnLifeMinMs, 0)
            let life = o.churnLifeMinMs + span * Double(nextRandom() % 10_000) / 10_000
            c.pointee.nextAt = now + Int64(life * 1e6)
        } else if stormPhase >= 3 {
            stats.reconnected += 1
        } else {
            stats.connected += 1
            initialDone += 1
        }
    }

    /// Closes a connection. `byUs`: we chose to (churn, storm, end); otherwise the peer or an error did.
    mutating func closeConn(_ i: Int, byUs: Bool) {
        let c = conns + i
        guard c.pointee.state != .closed && c.pointee.state != .idle else { return }
        let wasReady = c.pointee.state == .ready
        if c.pointee.state != .ready {
            // still in the handshake: a failed connect
            connectFailed(i, "closed during handshake")
            return
        }
        if let s = c.pointee.ssl {
            clt_tls_free(s, byUs ? 1 : 0)  // ours: try to send close_notify first
            c.pointee.ssl = nil
        }
        if c.pointee.fd >= 0 {
            epoll_ctl(epfd, EPOLL_CTL_DEL, c.pointee.fd, nil)
            close(c.pointee.fd)
        }
        c.pointee.fd = -1
        c.pointee.state = .closed
        c.pointee.rlen = 0
        c.pointee.olen = 0
        c.pointee.outArmed = false
        c.pointee.readWantsWrite = false
        if wasReady && !byUs && !stopping && c.pointee.role != .churner {
            stats.closedEarly += 1
        }
        if c.pointee.role == .churner {
            c.pointee.nextAt = monoNs() + Int64(o.churnPauseMs * 1e6)
        }
    }

    @inline(__always) mutating func nextRandom() -> UInt64 {
        rng ^= rng << 13
        rng ^= rng >> 7
        rng ^= rng << 17
        return rng
    }

    // MARK: - output

    @inline(__always) mutating func ensureOut(_ i: Int, _ extra: Int) {
        let c = conns + i
        let need = c.pointee.olen + extra
        if need > c.pointee.ocap {
            let cap = max(need, c.pointee.ocap * 2, 2048)
            let p = realloc(c.pointee.obuf, cap)!
            c.pointee.obuf = p.assumingMemoryBound(to: UInt8.self)
            c.pointee.ocap = cap
        }
    }

    mutating func appendRaw(_ i: Int, _ p: UnsafePointer<UInt8>, _ len: Int) {
        ensureOut(i, len)
        let c = conns + i
        (c.pointee.obuf! + c.pointee.olen).update(from: p, count: len)
        c.pointee.olen += len
    }

    /// Appends one masked client frame (FIN set) with `opcode` and the payload at `p`.
    @inline(__always) mutating func appendFrame(_ i: Int, opcode: UInt8, _ p: UnsafePointer<UInt8>, _ len: Int) {
        ensureOut(i, len + 14)
        let c = conns + i
        let f = c.pointee.obuf! + c.pointee.olen
        f[0] = 0x80 | opcode
        var h = 2
        if len < 126 {
            f[1] = 0x80 | UInt8(len)
        } else if len < 65536 {
            f[1] = 0x80 | 126
            f[2] = UInt8(truncatingIfNeeded: len >> 8)
            f[3] = UInt8(truncatingIfNeeded: len)
            h = 4
        } else {
            f[1] = 0x80 | 127
            for k in 0..<8 { f[2 + k] = UInt8(truncatingIfNeeded: UInt64(len) >> (56 - 8 * UInt64(k))) }
            h = 10
        }
        let key = UInt32(truncatingIfNeeded: nextRandom())
        f[h] = UInt8(truncatingIfNeeded: key)
        f[h + 1] = UInt8(truncatingIfNeeded: key >> 8)
        f[h + 2] = UInt8(truncatingIfNeeded: key >> 16)
        f[h + 3] = UInt8(truncatingIfNeeded: key >> 24)
        clt_mask_copy(f + h + 4, p, len, key)
        c.pointee.olen += h + 4 + len
    }

    mutating func appendText(_ i: Int, _ s: String) {
        let b = Array(s.utf8)
        b.withUnsafeBufferPointer { appendFrame(i, opcode: 1, $0.baseAddress!, $0.count) }
    }

    /// Sends what is queued for the connection; arms EPOLLOUT while something is left. Over TLS, what a
    /// WANT_WRITE left stays at the front of the buffer, so the retry starts with the same bytes (partial writes and a
    /// movable write buffer are on: the buffer may have moved or grown since).
    mutating func flush(_ i: Int) {
        let c = conns + i
        guard c.pointee.fd >= 0 else { return }
        var off = 0
        let total = c.pointee.olen
        while off < total {
            let r: Int
            if let s = c.pointee.ssl {
                r = clt_tls_write(s, c.pointee.obuf! + off, total - off)
                if r < 0 {
                    if r == CLT_TLS_WANT_WRITE || r == CLT_TLS_WANT_READ { break }
                    if r == CLT_TLS_FAILED { noteError("tls \(String(cString: clt_tls_last_error()))") }
                    closeConn(i, byUs: false)
                    return
                }
            } else {
                r = send(c.pointee.fd, c.pointee.obuf! + off, total - off, Int32(MSG_NOSIGNAL))
                if r < 0 {
                    if errno == EAGAIN || errno == EWOULDBLOCK { break }
                    if errno == EINTR { continue }
                    closeConn(i, byUs: false)
                    return
                }
            }
            off += r
            stats.bytesOut += Int64(r)
        }
        if off > 0 {
            if off < total { memmove(c.pointee.obuf!, c.pointee.obuf! + off, total - off) }
            c.pointee.olen = total - off
        }
        updateInterest(i)
    }

    /// EPOLLIN always; EPOLLOUT while bytes wait to be sent or (wss) an SSL_read wants the socket writable.
    @inline(__always) mutating func updateInterest(_ i: Int) {
        let c = conns + i
        let wantOut = c.pointee.olen > 0 || c.pointee.readWantsWrite
        if wantOut != c.pointee.outArmed {
            setEvents(i, EPOLLIN.rawValue | (wantOut ? EPOLLOUT.rawValue : 0))
            c.pointee.outArmed = wantOut
        }
    }

    /// wss: reads again the connections whose read loop stopped at its round limit.
    mutating func retryTLSReads() {
        var list: [Int] = []
        swap(&list, &tlsAgain)
        for i in list where conns[i].ssl != nil {
            switch conns[i].state {
            case .upgrading, .authing, .joining, .ready: onReadable(i)
            default: break
            }
        }
    }

    // MARK: - input

    mutating func onReadable(_ i: Int) {
        let c = conns + i
        var have = c.pointee.rlen
        if have > 0 { rx.update(from: c.pointee.rbuf!.assumingMemoryBound(to: UInt8.self), count: have) }
        var rounds = 0
        while true {
            let space = rxCap - have
            if space <= 0 {
                // one frame larger than the receive buffer: not a load this tool generates
                noteError("frame larger than --recv-buffer")
                closeConn(i, byUs: true)
                return
            }
            let r: Int
            if let s = c.pointee.ssl {
                // one TLS record at most per call: read until WANT_READ (nothing left in OpenSSL or the socket)
                r = clt_tls_read(s, rx + have, space)
                if r < 0 {
                    if r == CLT_TLS_WANT_READ { break }
                    if r == CLT_TLS_WANT_WRITE {
                        c.pointee.readWantsWrite = true
                        break
                    }
                    if r == CLT_TLS_FAILED { noteError("tls \(String(cString: clt_tls_last_error()))") }
                    closeConn(i, byUs: false)
                    return
                }
            } else {
                r = recv(c.pointee.fd, rx + have, space, 0)
                if r <= 0 {
                    if r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
                    if r < 0 && errno == EINTR { continue }
                    closeConn(i, byUs: false)
                    return
                }
            }
            // plain: a short read emptied the socket (level-triggered epoll reports what is left)
            let drained = c.pointee.ssl == nil && r < space
            stats.bytesIn += Int64(r)
            have += r
            let now = monoNs()
            var off = 0
            if c.pointee.state == .upgrading {
                let e = find(rx, from: 0, end: have, nHdrEnd)
                if e < 0 {
                    if have > 16384 {
                        connectFailed(i, "upgrade: no end of headers")
                        return
                    }
                    if drained { break }
                    continue
                }
                // "HTTP/1.1 101"
                if have < 12 || rx[9] != 49 || rx[10] != 48 || rx[11] != 49 {
                    let status = String(decoding: UnsafeBufferPointer(start: rx, count: min(have, 40)), as: UTF8.self)
                    connectFailed(i, "upgrade refused: \(status.split(separator: "\r").first ?? "")")
                    return
                }
                off = e + 4
                hsLat.record(UInt64(max((now - c.pointee.tConnect) / 1000, 1)))
                if c.pointee.tls { hsTLSLat.record(UInt64(max((now - c.pointee.tConnect) / 1000, 1))) }
                if isGateway {
                    c.pointee.state = .authing
                    appendText(i, "{\"type\":\"hello\",\"token\":\"\(tokens[Int(c.pointee.global)])\"}")
                    flush(i)
                    if c.pointee.state == .closed { return }
                } else {
                    markReady(i, now)
                }
            }
            // every complete frame in the buffer
            while have - off >= 2 {
                let f = rx + off
                let avail = have - off
                var len = Int(f[1] & 0x7f)
                var h = 2
                if len == 126 {
                    if avail < 4 { break }
                    len = Int(f[2]) << 8 | Int(f[3])
                    h = 4
                } else if len == 127 {
                    if avail < 10 { break }
                    var l: UInt64 = 0
                    for k in 0..<8 { l = l << 8 | UInt64(f[2 + k]) }
                    len = Int(truncatingIfNeeded: min(l, UInt64(Int32.max)))
                    h = 10
                }
                if f[1] & 0x80 != 0 { h += 4 }  // servers must not mask; skip a key if one is there
                if avail < h + len { break }
                let op = f[0] & 0x0f
                let fin = f[0] & 0x80 != 0
                if op == 1 || op == 2 {
                    if !fin { stats.fragments += 1 }
                    if isGateway {
                        onGatewayText(i, f + h, len, now)
                    } else {
                        onRoomText(i, f + h, len, now)
                    }
                    if c.pointee.state == .closed { return }
                } else if op == 0 {
                    stats.fragments += 1
                } else if op == 8 {
                    let code = len >= 2 ? Int(f[h]) << 8 | Int(f[h + 1]) : 1005
                    closeCodes[code, default: 0] += 1
                    closeConn(i, byUs: false)
                    return
                } else if op == 9 {
                    appendFrame(i, opcode: 10, f + h, len)
                    flush(i)
                    if c.pointee.state == .closed { return }
                }
                off += h + len
            }
            if off > 0 {
                if off < have { memmove(rx, rx + off, have - off) }
                have -= off
            }
            rounds += 1
            if drained { break }
            if c.pointee.ssl == nil ? rounds >= 8 : rounds >= 32 {
                if c.pointee.ssl != nil { tlsAgain.append(i) }
                break
            }
        }
        if have > 0 {
            if have > c.pointee.rcap {
                let cap = max(have, c.pointee.rcap * 2, 1024)
                c.pointee.rbuf = realloc(c.pointee.rbuf, cap)
                c.pointee.rcap = cap
            }
            c.pointee.rbuf!.copyMemory(from: rx, byteCount: have)
        }
        c.pointee.rlen = have
        if c.pointee.ssl != nil {
            // a write that wanted the socket readable goes again; EPOLLOUT follows readWantsWrite
            if c.pointee.olen > 0 { flush(i) } else { updateInterest(i) }
        }
    }

    /// A delivery (an event of ours) at `now` of a message whose intended send time is `t`.
    @inline(__always) mutating func countDelivery(_ t: Int64, _ now: Int64) {
        stats.rxTotal += 1
        if t >= ph.measStart && t < ph.measEnd && ph.measStart > 0 { stats.rxOfMeasSends += 1 }
        if now >= ph.measStart && now < ph.measEnd && ph.measStart > 0 {
            stats.rxMeas += 1
            // from the intended send time: a late sender (coordinated omission) shows up as latency
            lat.record(UInt64(max((now - t) / 1000, 1)))
        }
    }

    /// Room protocol: payload "<t>,<pubid>,<n>,xxxx" (the same layout wsload sends).
    @inline(__always) mutating func onRoomText(_ i: Int, _ p: UnsafePointer<UInt8>, _ len: Int, _ now: Int64) {
        var k = 0
        let t = parseDecimal(p, &k, min(len, 20))
        if k == 0 {
            stats.rxBad += 1
            return
        }
        let c = conns + i
        switch c.pointee.role {
        case .pub:
            stats.rxPub += 1
        case .churner:
            stats.rxChurn += 1
        case .sub:
            countDelivery(t, now)
            if let ln = c.pointee.lastN, k < len, p[k] == 44 {
                k += 1
                let pid = Int(parseDecimal(p, &k, len))
                guard k < len, p[k] == 44, pid < o.pubs else { return }
                k += 1
                let num = parseDecimal(p, &k, len)
                let last = ln[pid]
                if num == last + 1 || last < 0 {
                    // first message seen from this publisher starts the check
                } else if num > last + 1 {
                    stats.gaps += num - last - 1
                } else {
                    stats.dups += 1
                }
                if num > last { ln[pid] = num }
            }
        }
    }

    /// Gateway protocol: every server frame starts `{"type":"`; the fields' order is fixed by the server.
    @inline(__always) mutating func onGatewayText(_ i: Int, _ p: UnsafePointer<UInt8>, _ len: Int, _ now: Int64) {
        guard len > 12, p[0] == 123, p[8] == 34 else {
            stats.rxBad += 1
            return
        }
        let c = conns + i
        switch p[9] {
        case 101:  // e
            if p[10] == 118 {  // "event"
                onEvent(i, p, len, now)
            } else {  // "error"
                // {"type":"error","code":"X"
                var k = 24
                while k < len && p[k] != 34 { k += 1 }
                let code = k <= len && len > 24 ? String(decoding: UnsafeBufferPointer(start: p + 24, count: k - 24), as: UTF8.self) : "?"
                errors[code, default: 0] += 1
                if firstErrors.count < 5 {
                    firstErrors.append(String(decoding: UnsafeBufferPointer(start: p, count: min(len, 200)), as: UTF8.self))
                }
            }
        case 97:  // "ack": {"type":"ack","id":"<nonce>-<pub>-<k>-<t>","session":...,"seq":N
            var q = 20
            while q < len && p[q] != 34 { q += 1 }
            var b = q - 1
            var t: Int64 = 0
            var mul: Int64 = 1
            while b > 20 && p[b] >= 48 && p[b] <= 57 {
                t += Int64(p[b] - 48) * mul
                mul *= 10
                b -= 1
            }
            stats.acksTotal += 1
            if now >= ph.measStart && now < ph.measEnd && ph.measStart > 0 {
                stats.acksMeas += 1
                ackLat.record(UInt64(max((now - t) / 1000, 1)))
            }
            let s = find(p, from: q, end: len, nSeq)
            if s >= 0 {
                var k = s + 6
                let seq = parseDecimal(p, &k, len)
                let r = Int(c.pointee.room)
                if seq > headBySession[r] { headBySession[r] = seq }
            }
            if find(p, from: q, end: len, nDuplicate) >= 0 { stats.ackDuplicates += 1 }
        case 119:  // "welcome"
            guard c.pointee.state == .authing else { return }
            if c.pointee.role == .pub {
                markReady(i, now)
            } else {
                c.pointee.state = .joining
                var j = "{\"type\":\"join\",\"session\":\"\(sessionNames[Int(c.pointee.room)])\""
                if c.pointee.lastSeq >= 0 { j += ",\"since\":\(c.pointee.lastSeq)" }
                j += "}"
                appendText(i, j)
                flush(i)
            }
        case 106:  // "joined"
            guard c.pointee.state == .joining else { return }
            let h = find(p, from: 10, end: len, nHead)
            var head: Int64 = 0
            if h >= 0 {
                var k = h + 7
                head = parseDecimal(p, &k, len)
            }
            if find(p, from: 10, end: len, nReset) >= 0 { stats.resets += 1 }
            if c.pointee.lastSeq < 0 { c.pointee.lastSeq = head }
            markReady(i, now)
            if stormPhase >= 3 && c.pointee.caughtUpAt == 0 && c.pointee.lastSeq >= c.pointee.target {
                c.pointee.caughtUpAt = now
                stats.caughtUp += 1
                catchupLat.record(UInt64(max((now - stormT0) / 1000, 1)))
            }
        default:
            stats.rxOther += 1
        }
    }

    @inline(__always) mutating func onEvent(_ i: Int, _ p: UnsafePointer<UInt8>, _ len: Int, _ now: Int64) {
        let c = conns + i
        var seq: Int64 = -1
        var from = 20
        let s = find(p, from: from, end: len, nSeq)
        if s >= 0 {
            var k = s + 6
            seq = parseDecimal(p, &k, len)
            from = k
        }
        let d = find(p, from: from, end: len, nDataT)
        var t: Int64 = 0
        if d >= 0 {
            var k = d + 12
            t = parseDecimal(p, &k, len)
        } else {
            stats.rxBad += 1
        }
        let role = c.pointee.role
        if seq >= 0 {
            let last = c.pointee.lastSeq
            if last < 0 || seq == last + 1 {
                c.pointee.lastSeq = seq
            } else if seq > last + 1 {
                if role == .churner { stats.churnGaps += seq - last - 1 } else { stats.gaps += seq - last - 1 }
                c.pointee.lastSeq = seq
            } else {
                if role == .churner { stats.churnDups += 1 } else { stats.dups += 1 }
            }
        }
        switch role {
        case .sub:
            if o.kind == .resumeStorm {
                if stormPhase >= 3 {
                    stats.replayed += 1
                    if c.pointee.caughtUpAt == 0 && c.pointee.lastSeq >= c.pointee.target {
                        c.pointee.caughtUpAt = now
                        stats.caughtUp += 1
                        catchupLat.record(UInt64(max((now - stormT0) / 1000, 1)))
                    }
                }
                return
            }
            if d >= 0 { countDelivery(t, now) }
        case .churner:
            stats.rxChurn += 1
        case .pub:
            stats.rxPub += 1
        }
    }

    // MARK: - publishing

    /// Open-loop schedule: message k of a publisher is due at pubStart + phase + k/rate, whatever the server does.
    /// Its intended time is what goes in the message, so time spent waiting to send counts as latency.
    mutating func publishTick(_ now: Int64) {
        let limit = min(now, ph.measEnd - 1)
        let nsPerMsg = 1e9 / o.rate
        var minDue = Int64.max
        for i in pubIdx {
            let c = conns + i
            let due = c.pointee.nextDue
            if now < due {
                if due < minDue { minDue = due }
                continue
            }
            guard c.pointee.state == .ready else { continue }
            let base = ph.pubStart + c.pointee.phaseNs
            guard limit >= base else {
                c.pointee.nextDue = base
                if base < minDue { minDue = base }
                continue
            }
            let target = Int64(Double(limit - base) / nsPerMsg) + 1
            let backlog = target - c.pointee.sent
            if backlog > stats.maxBacklog { stats.maxBacklog = backlog }
            var added = 0
            while c.pointee.sent < target && c.pointee.olen < o.maxOutbound && added < 4096 {
                let t = base + Int64(Double(c.pointee.sent) * nsPerMsg)
                appendPublish(i, t)
                added += 1
            }
            if added > 0 && !c.pointee.outArmed { flush(i) }
            var next = base + Int64(Double(c.pointee.sent) * nsPerMsg)
            if c.pointee.sent < target { next = now + 1_000_000 }  // held back by a full socket: retry on the tick
            if next >= ph.measEnd { next = Int64.max }
            c.pointee.nextDue = next
            if next < minDue { minDue = next }
        }
        armTimer(minDue, now)
    }

    /// Arms the timerfd for the earliest due publish (absolute CLOCK_MONOTONIC).
    mutating func armTimer(_ at: Int64, _ now: Int64) {
        guard at != Int64.max else { return }
        if timerArmedAt != 0 && timerArmedAt <= at { return }
        let when = max(at, now + 20_000)  // coalesce what falls due within 20 µs
        var spec = itimerspec()
        spec.it_value.tv_sec = Int(when / 1_000_000_000)
        spec.it_value.tv_nsec = Int(when % 1_000_000_000)
        timerfd_settime(timerFd, Int32(TFD_TIMER_ABSTIME), &spec, nil)
        timerArmedAt = when
    }

    /// Appends publish number `sent` of publisher `i`, stamped with time `t`, and counts it.
    @inline(__always) mutating func appendPublish(_ i: Int, _ t: Int64) {
        let c = conns + i
        let k = c.pointee.sent
        let room = Int(c.pointee.room)
        var w = 0
        let b = scratch
        if isGateway {
            // {"type":"publish","session":"S","id":"NONCE-PUB-K-T","kind":"progress","data":{"t":T,"p":"xx"}}
            w += put(b, prefixes[i])
            w += writeDecimal(b + w, k)
            b[w] = 45
            w += 1
            w += writeDecimal(b + w, t)
            w += put(b + w, publishMid)
            let dataStart = w - 5  // `data` is `{"t":T,"p":"xx…"}`: its `{"t":` ends publishMid
            w += writeDecimal(b + w, t)
            w += put(b + w, dataMid)
            // Pad `data` to --size bytes with its closing `"}`, or fill MIN-MAX bytes of text (varied by k).
            let pad =
                o.textBytes.map { $0.lowerBound + Int(UInt64(k) &* 2_654_435_761 % UInt64($0.count)) }
                ?? max(o.size - ((w - dataStart) + 2), 0)
            (b + w).update(repeating: 120, count: pad)
            w += pad
            w += put(b + w, dataEnd)
        } else {
            w += writeDecimal(b, t)
            w += put(b + w, prefixes[i])
            w += writeDecimal(b + w, k)
            b[w] = 44
            w += 1
            if w < o.size {
                (b + w).update(repeating: 120, count: o.size - w)
                w = o.size
            }
        }
        appendFrame(i, opcode: 1, b, w)
        c.pointee.sent = k + 1
        stats.sentTotal += 1
        if t >= ph.measStart && t < ph.measEnd && ph.measStart > 0 {
            stats.sentMeas += 1
            stats.expectedMeas += subsInRoom[room]
        }
    }

    // MARK: - churn

    mutating func churnTick(_ now: Int64) {
        let stopAt = ph.measEnd
        for i in churnIdx {
            let c = conns + i
            switch c.pointee.state {
            case .ready:
                if c.pointee.nextAt == 0 {
                    // connected before the start: give it a random first life
                    let span = max(o.churnLifeMaxMs - o.churnLifeMinMs, 0)
                    c.pointee.nextAt = now + Int64((o.churnLifeMinMs + span * Double(nextRandom() % 10_000) / 10_000) * 1e6)
                } else if now >= c.pointee.nextAt {
                    // a clean close (1000), then come back after the pause
                    var code: (UInt8, UInt8) = (0x03, 0xE8)
                    withUnsafeBytes(of: &code) { appendFrame(i, opcode: 8, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), 2) }
                    flush(i)
                    closeConn(i, byUs: true)
                    stats.churnCycles += 1
                }
            case .closed, .idle:
                if now < stopAt && now >= c.pointee.nextAt && inflight < inflightLimit {
                    startConnect(i, now)
                }
            default:
                break
            }
        }
    }

    // MARK: - resume storm

    /// Phases: 0 wait for start; 1 subscribers leave, publishers publish `behind` per session; 2 wait for every ack;
    /// 3 all subscribers reconnect at once with since; 4 done (all caught up or timed out).
    mutating func stormTick(_ now: Int64) -> Bool {
        if ph.stop == 1 { return false }
        switch stormPhase {
        case 0:
            guard ph.pubStart > 0, now >= ph.pubStart else { return true }
            for i in 0..<n where conns[i].role == .sub && conns[i].state == .ready { closeConn(i, byUs: true) }
            var perRoomPubs = [Int](repeating: 0, count: o.rooms)
            for i in pubIdx { perRoomPubs[Int(conns[i].room)] += 1 }
            for i in pubIdx where conns[i].state == .ready {
                let share = o.behind / max(perRoomPubs[Int(conns[i].room)], 1)
                for _ in 0..<share { appendPublish(i, now) }
                stormAcksWanted += Int64(share)
                flush(i)
            }
            stormPhase = 1
            stormDeadline = now + Int64(o.catchupTimeout * 1e9)
        case 1:
            if stats.acksTotal >= stormAcksWanted {
                stormPhase = 3
                stormT0 = monoNs()
                inflightLimit = Int.max
                for i in 0..<n where conns[i].role == .sub && conns[i].state == .closed {
                    conns[i].target = headBySession[Int(conns[i].room)]
                    conns[i].caughtUpAt = 0
                    startConnect(i, stormT0)
                }
                stormDeadline = stormT0 + Int64(o.catchupTimeout * 1e9)
            } else if now > stormDeadline {
                noteError("resume-storm: publishes not acked in time")
                return false
            }
        case 3:
            var waiting = 0
            for i in 0..<n where conns[i].role == .sub && conns[i].caughtUpAt == 0 && conns[i].state != .closed {
                waiting += 1
            }
            if waiting == 0 || now > stormDeadline {
                stormDoneAt = now
                for i in 0..<n where conns[i].role == .sub {
                    if conns[i].caughtUpAt == 0 {
                        stats.notCaughtUp += 1
                    } else {
                        stats.catchupTotalNs = max(stats.catchupTotalNs, conns[i].caughtUpAt - stormT0)
                    }
                }
                stormPhase = 4
                return false
            }
        default:
            return false
        }
        return true
    }

    // MARK: - end of run

    /// churn: every stable subscriber must end at its session's head (gateway) or at every publisher's last
    /// message (room): what is missing was lost.
    mutating func finalChecks() {
        stopping = true
        guard o.kind == .churn, o.procs == 1 else { return }
        for i in 0..<n where conns[i].role == .sub && conns[i].state == .ready {
            stats.stableChecked += 1
            if isGateway {
                let head = headBySession[Int(conns[i].room)]
                if conns[i].lastSeq < head { stats.lost += head - conns[i].lastSeq }
            } else if let ln = conns[i].lastN {
                for p in pubIdx where conns[p].room == conns[i].room {
                    let want = conns[p].sent - 1
                    let got = ln[Int(conns[p].pubID)]
                    if got < want { stats.lost += want - max(got, -1) }
                }
            }
        }
    }

    mutating func noteError(_ s: String) {
        errors[s, default: 0] += 1
        if firstErrors.count < 5 { firstErrors.append(s) }
    }
}
