import CLoadTest
import Dispatch
import Foundation
import GatewayAuth
import Glibc
import Histogram

// MARK: - /proc probes of the server and the machine

/// VmRSS of `pid` in KiB, or -1.
func readRSSKiB(_ pid: Int32) -> Int {
    guard pid > 0, let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return -1 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.dropFirst(6).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "") ?? -1
    }
    return -1
}

/// utime + stime of every thread of `pid`, in seconds (from /proc/PID/stat), or -1.
/// CPU seconds of the server and of `--extra-pids` together (-1 if the server's are unknown).
func serverCPUSeconds(_ o: Options) -> Double {
    let main = readCPUSeconds(o.serverPID)
    guard main >= 0 else { return -1 }
    return o.extraPIDs.reduce(main) { $0 + max(0, readCPUSeconds($1)) }
}

func readCPUSeconds(_ pid: Int32) -> Double {
    guard pid > 0, let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = s.lastIndex(of: ")")
    else { return -1 }
    let f = s[s.index(after: close)...].split(separator: " ")
    // after ")": state(3) ppid(4) ... utime(14) stime(15) -> indices 11 and 12 here
    guard f.count > 13, let ut = Double(f[11]), let st = Double(f[12]) else { return -1 }
    return (ut + st) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// (busy, total, irq) jiffies of the whole machine from /proc/stat.
func readMachineStat() -> (Double, Double, Double) {
    guard let s = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
        let line = s.split(separator: "\n").first
    else { return (0, 0, 0) }
    let v = line.split(separator: " ").dropFirst().prefix(8).compactMap { Double($0) }
    guard v.count == 8 else { return (0, 0, 0) }
    let total = v.reduce(0, +)
    return (total - v[3] - v[4] - v[5] - v[6], total, v[5] + v[6])
}

func loadAverage() -> String {
    let s = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
    return s.split(separator: " ").prefix(3).joined(separator: " ")
}

func sleepNs(_ ns: Int64) {
    var ts = timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
    var rem = timespec()
    while nanosleep(&ts, &rem) != 0 && errno == EINTR { ts = rem }
}

// MARK: - tokens

/// Mints every token the run needs (one per connection: distinct `sub`s stay under the per-`sub` connection cap) in a
/// forked child, so that this process has no threads when it forks the event loops. Token g: subscriber g, then
/// publishers (role agent), then churners.
func mintTokens(_ o: Options, nonce: String) -> [String] {
    guard o.target == .gateway else { return [] }
    let count = o.subs + o.pubs + (o.kind == .churn ? o.churnClients : 0)
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { fatal("pipe: \(String(cString: strerror(errno)))") }
    let pid = fork()
    if pid == 0 {
        close(fds[0])
        let out = fds[1]
        let sem = DispatchSemaphore(value: 0)
        let opts = o
        Task.detached {
            var buf: [UInt8] = []
            for g in 0..<count {
                let role: Role
                let sub: String
                let room: Int
                if g < opts.subs {
                    (role, sub, room) = (.user, "lt\(nonce)-u\(g)", g % opts.rooms)
                } else if g < opts.subs + opts.pubs {
                    let j = g - opts.subs
                    (role, sub, room) = (.agent, "lt\(nonce)-a\(j)", j % opts.rooms)
                } else {
                    let h = g - opts.subs - opts.pubs
                    (role, sub, room) = (.user, "lt\(nonce)-c\(h)", h % opts.rooms)
                }
                do {
                    let tok = try await TokenMinter.hs256(
                        secret: opts.secret, sub: sub, role: role, sessions: ["lt\(nonce)-\(room)"], tier: nil,
                        ttlSeconds: 7200)
                    buf.append(contentsOf: tok.utf8)
                    buf.append(10)
                } catch {
                    writeAll(2, Array("gateway-loadtest: mint: \(error)\n".utf8))
                    _exit(3)
                }
                if buf.count > 65536 {
                    writeAll(out, buf)
                    buf.removeAll(keepingCapacity: true)
                }
            }
            writeAll(out, buf)
            sem.signal()
        }
        sem.wait()
        _exit(0)
    }
    close(fds[1])
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let r = chunk.withUnsafeMutableBytes { read(fds[0], $0.baseAddress!, 65536) }
        if r < 0 && errno == EINTR { continue }
        if r <= 0 { break }
        data.append(contentsOf: chunk[0..<r])
    }
    close(fds[0])
    var st: Int32 = 0
    waitpid(pid, &st, 0)
    let toks = data.split(separator: 10).map { String(decoding: $0, as: UTF8.self) }
    guard toks.count == count else { fatal("minted \(toks.count) of \(count) tokens") }
    return toks
}

func fatal(_ s: String) -> Never {
    writeAll(2, Array("gateway-loadtest: \(s)\n".utf8))
    exit(1)
}

// MARK: - one run

/// The merged result of one run, plus the server and machine figures the parent sampled.
struct RunResult {
    var o: Options
    var counters: [String: Int64] = [:]
    var errors: [String: Int] = [:]
    var closeCodes: [String: Int] = [:]
    var firstErrors: [String] = []
    var lat = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    var ack = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    var hs = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    var ready = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    var catchup = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    /// wss: TCP connect → TLS done, and TCP connect → 101 of the TLS connections.
    var tls = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    var hsTLS = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    var tlsVersion = ""
    var connectSeconds = 0.0
    var rss0 = -1, rssConn = -1, rssEnd = -1, rssPeak = -1
    var serverCPU = -1.0
    /// The server's socket-write syscalls in the window (send/sendto/sendmsg/write/writev), -1 if not counted.
    var serverSends: Int64 = -1
    var serverSendsNote = ""
    var windowSeconds = 0.0
    var machineBusyPct = -1.0
    var machineIrqPct = -1.0
    var loadStart = ""
    var loadEnd = ""
    var childrenOK = 0
    var headMax: Int64 = 0

    func c(_ k: String) -> Int64 { counters[k] ?? 0 }
}

/// Forks `o.procs` event loops, coordinates their phases, samples the server, merges their reports.
func runOnce(_ o: Options, tokens: [String], nonce: String) -> RunResult {
    var r = RunResult(o: o)
    r.loadStart = loadAverage()
    r.rss0 = readRSSKiB(o.serverPID)
    struct Child {
        var pid: pid_t
        var ctl: Int32
        var res: Int32
        var buf: [UInt8] = []
        var connectLine: String? = nil
        var report: String? = nil
    }
    var kids: [Child] = []
    let t0 = monoNs()
    for k in 0..<o.procs {
        var ctl: [Int32] = [0, 0]
        var res: [Int32] = [0, 0]
        guard pipe(&ctl) == 0, pipe(&res) == 0 else { fatal("pipe: \(String(cString: strerror(errno)))") }
        let pid = fork()
        if pid < 0 { fatal("fork: \(String(cString: strerror(errno)))") }
        if pid == 0 {
            close(ctl[1])
            close(res[0])
            for kid in kids {
                close(kid.ctl)
                close(kid.res)
            }
            signal(SIGPIPE, SIG_IGN)
            var engine = Engine(options: o, procIndex: k, tokens: tokens, nonce: nonce, ctlFd: ctl[0], resFd: res[1])
            engine.run()
            writeAll(res[1], Array(("J " + engine.reportJSON() + "\n").utf8))
            _exit(0)
        }
        close(ctl[0])
        close(res[1])
        kids.append(Child(pid: pid, ctl: ctl[1], res: res[0]))
    }

    /// Reads what the children wrote, waiting up to `ms`.
    func pump(_ ms: Int32) {
        var pfds = kids.map { pollfd(fd: $0.res, events: Int16(POLLIN), revents: 0) }
        let got = poll(&pfds, nfds_t(pfds.count), ms)
        guard got > 0 else { return }
        for k in 0..<kids.count where pfds[k].revents != 0 {
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            let n = chunk.withUnsafeMutableBytes { read(kids[k].res, $0.baseAddress!, 1 << 16) }
            if n <= 0 {
                if kids[k].report == nil { kids[k].report = "" }  // died without a report
                continue
            }
            kids[k].buf.append(contentsOf: chunk[0..<n])
            while let nl = kids[k].buf.firstIndex(of: 10) {
                let line = String(decoding: kids[k].buf[0..<nl], as: UTF8.self)
                kids[k].buf.removeFirst(nl + 1)
                if line.hasPrefix("C ") { kids[k].connectLine = line }
                if line.hasPrefix("J ") { kids[k].report = String(line.dropFirst(2)) }
            }
        }
    }
    func samplePeak() {
        let v = readRSSKiB(o.serverPID)
        if v > r.rssPeak { r.rssPeak = v }
    }

    // phase 1: every child connects its share
    let connectDeadline = t0 + Int64((o.connectTimeout + 15) * 1e9)
    while kids.contains(where: { $0.connectLine == nil && $0.report == nil }) && monoNs() < connectDeadline {
        pump(20)
        samplePeak()
    }
    r.connectSeconds = Double(monoNs() - t0) / 1e9
    // phase 2: settle, then warm-up, measurement, drain on one shared clock
    sleepNs(300_000_000)
    r.rssConn = readRSSKiB(o.serverPID)
    samplePeak()
    let now = monoNs()
    let pubStart = now + 50_000_000
    let measStart = pubStart + Int64(o.warmup * 1e9)
    let measEnd = measStart + Int64(o.duration * 1e9)
    let stop: Int64 = o.kind == .resumeStorm ? 0 : measEnd + Int64(o.drain * 1e9)
    let cmd = Array("S \(pubStart) \(o.kind == .resumeStorm ? pubStart : measStart) \(measEnd) \(stop)\n".utf8)
    for kid in kids { writeAll(kid.ctl, cmd) }
    var cpu0 = -1.0
    var cpu1 = -1.0
    var m0 = (0.0, 0.0, 0.0)
    var m1 = (0.0, 0.0, 0.0)
    var tCPU0: Int64 = 0
    var tCPU1: Int64 = 0
    let hardStop = (o.kind == .resumeStorm ? pubStart + Int64(2 * o.catchupTimeout * 1e9) + 5_000_000_000 : stop + 20_000_000_000)
    var gotStart = false
    var gotEnd = false
    var syscallCounter: SyscallCounter?
    if o.kind == .resumeStorm {
        cpu0 = serverCPUSeconds(o)
        m0 = readMachineStat()
        tCPU0 = monoNs()
        gotStart = true
    }
    while kids.contains(where: { $0.report == nil }) && monoNs() < hardStop {
        pump(20)
        samplePeak()
        let t = monoNs()
        if !gotStart && t >= measStart {
            gotStart = true
            syscallCounter = SyscallCounter.start(o)
            cpu0 = serverCPUSeconds(o)
            m0 = readMachineStat()
            tCPU0 = t
        }
        if o.kind != .resumeStorm && !gotEnd && t >= measEnd {
            gotEnd = true
            if let counter = syscallCounter {
                (r.serverSends, r.serverSendsNote) = counter.stop()
                syscallCounter = nil
            }
            cpu1 = serverCPUSeconds(o)
            m1 = readMachineStat()
            tCPU1 = t
            r.rssEnd = readRSSKiB(o.serverPID)
        }
    }
    if o.kind == .resumeStorm {
        cpu1 = serverCPUSeconds(o)
        m1 = readMachineStat()
        tCPU1 = monoNs()
        r.rssEnd = readRSSKiB(o.serverPID)
    }
    for kid in kids where kid.report == nil { writeAll(kid.ctl, Array("Q\n".utf8)) }
    // collect the children (bounded)
    for kid in kids {
        var st: Int32 = 0
        let deadline = monoNs() + 10_000_000_000
        while waitpid(kid.pid, &st, WNOHANG) == 0 {
            if monoNs() > deadline {
                kill(kid.pid, SIGKILL)
                waitpid(kid.pid, &st, 0)
                break
            }
            pump(5)
        }
        close(kid.ctl)
    }
    pump(0)
    for kid in kids { close(kid.res) }
    r.loadEnd = loadAverage()
    if cpu0 >= 0 && cpu1 >= 0 { r.serverCPU = cpu1 - cpu0 }
    r.windowSeconds = tCPU1 > tCPU0 ? Double(tCPU1 - tCPU0) / 1e9 : o.duration
    if m1.1 > m0.1 {
        r.machineBusyPct = (m1.0 - m0.0) / (m1.1 - m0.1) * 100
        r.machineIrqPct = (m1.2 - m0.2) / (m1.1 - m0.1) * 100
    }
    // merge the children's reports
    for kid in kids {
        guard let rep = kid.report, !rep.isEmpty,
            let obj = (try? JSONSerialization.jsonObject(with: Data(rep.utf8))) as? [String: Any]
        else { continue }
        r.childrenOK += 1
        for (k, v) in obj {
            switch v {
            case let d as [String: Any] where k == "errors":
                for (e, c) in d { r.errors[e, default: 0] += (c as? NSNumber)?.intValue ?? 0 }
            case let d as [String: Any] where k == "close_codes":
                for (e, c) in d { r.closeCodes[e, default: 0] += (c as? NSNumber)?.intValue ?? 0 }
            case let a as [Any] where k == "first_errors":
                r.firstErrors += a.compactMap { $0 as? String }.prefix(5 - min(r.firstErrors.count, 5))
            case let v as String where k == "tls_version":
                if r.tlsVersion.isEmpty { r.tlsVersion = v }
            case let a as [Any] where k == "heads":
                for h in a { r.headMax = max(r.headMax, (h as? NSNumber)?.int64Value ?? 0) }
            case let a as [Any] where k.hasPrefix("h_"):
                for pair in a {
                    guard let p = pair as? [Any], p.count == 2, let v = (p[0] as? NSNumber)?.uint64Value,
                        let c = (p[1] as? NSNumber)?.uint64Value
                    else { continue }
                    switch k {
                    case "h_lat": r.lat.record(v, count: c)
                    case "h_ack": r.ack.record(v, count: c)
                    case "h_hs": r.hs.record(v, count: c)
                    case "h_ready": r.ready.record(v, count: c)
                    case "h_tls": r.tls.record(v, count: c)
                    case "h_hs_tls": r.hsTLS.record(v, count: c)
                    default: r.catchup.record(v, count: c)
                    }
                }
            case let num as NSNumber:
                let x = num.int64Value
                if k == "max_backlog" || k == "catchup_total_ns" || k == "storm_done" {
                    r.counters[k] = max(r.counters[k] ?? 0, x)
                } else if k == "storm_t0" {
                    r.counters[k] = r.counters[k].map { min($0, x) } ?? x
                } else {
                    r.counters[k, default: 0] += x
                }
            default:
                break
            }
        }
    }
    return r
}
