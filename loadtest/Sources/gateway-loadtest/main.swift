// gateway-loadtest: drives the gateway (protocol v1) or a reference room relay with an open-loop schedule and
// measures deliveries/s, delivery ratio, fan-out and ack latency, connects, server RSS and CPU. See loadtest/README.md.
import CLoadTest
import Foundation
import Glibc
import Histogram

var opts = Options()
var args = Array(CommandLine.arguments.dropFirst())
if args.contains("--help") || args.contains("-h") {
    print(usageText)
    exit(0)
}
do {
    // a scenario file first (defaults), then flags
    if let first = args.first, !first.hasPrefix("--") {
        try opts.apply(scenarioFile: first)
        if opts.name == "adhoc" { opts.name = URL(fileURLWithPath: first).deletingPathExtension().lastPathComponent }
        args.removeFirst()
    }
    var k = 0
    while k < args.count {
        let a = args[k]
        if a == "--tls" && (k + 1 == args.count || args[k + 1].hasPrefix("--")) {
            // the one flag that may stand alone
            try opts.set("tls", "true")
            k += 1
            continue
        }
        guard a.hasPrefix("--"), k + 1 < args.count else { throw OptionsError.bad("expected --flag value at \(a)") }
        try opts.set(String(a.dropFirst(2)), args[k + 1])
        k += 2
    }
    if opts.secret.isEmpty, let env = ProcessInfo.processInfo.environment[opts.secretEnv] { opts.secret = env }
    if opts.kind == .resumeStorm || opts.kind == .churn {
        // one process: the checks need every subscriber and publisher in one place
        opts.procs = 1
    }
    if opts.kind == .resumeStorm {
        opts.pubs = opts.rooms  // one publisher per session publishes the `behind` events
        opts.rate = 0
    }
    if opts.kind == .idle {
        opts.pubs = 0
        opts.rate = 0
    }
    try opts.validate()
} catch {
    writeAll(2, Array("gateway-loadtest: \(error)\n\(usageText)\n".utf8))
    exit(2)
}

// Enough descriptors for idle-10k and more (the soft limit up to the hard one).
var rl = rlimit()
getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
let want = rlim_t(opts.subs + opts.pubs + opts.churnClients + 256)
if rl.rlim_cur < want {
    rl.rlim_cur = min(max(want, rl.rlim_cur), rl.rlim_max)
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
    if rl.rlim_cur < want {
        writeAll(2, Array("gateway-loadtest: RLIMIT_NOFILE hard limit \(rl.rlim_max) < \(want) needed\n".utf8))
    }
}
signal(SIGPIPE, SIG_IGN)

// A run nonce keeps sessions, subs and publish ids of this invocation apart from earlier ones on the same server.
let nonce = String(UInt64(truncatingIfNeeded: monoNs()) % 0xFFFFFF, radix: 16) + String(getpid() % 4096, radix: 16)
let tMint = monoNs()
let tokens = mintTokens(opts, nonce: nonce)
if !tokens.isEmpty {
    writeAll(2, Array(String(format: "gateway-loadtest: minted %d tokens in %.2f s\n", tokens.count, Double(monoNs() - tMint) / 1e9).utf8))
}

/// One JSON line on stdout (written at once, so lines from concurrent runs never interleave), the table on stderr.
func emit(_ r: RunResult, table: Bool, extra: String = "") {
    writeAll(1, Array((r.jsonLine(extra: extra) + "\n").utf8))
    if table { writeAll(2, Array(r.table().utf8)) }
}

switch opts.kind {
case .ramp:
    // raise the per-publisher rate step by step; stop when delivered/s stops growing or falls far under the offer
    var best = 0.0
    var bestRate = 0.0
    var steps: [String] = []
    var last: RunResult?
    for rate in opts.rates {
        var o = opts
        o.rate = rate
        o.kind = .ramp
        let r = runOnce(o, tokens: tokens, nonce: nonce)
        emit(r, table: opts.table, extra: "\"ramp_step\":\(steps.count)")
        let got = r.deliveredPerSecond
        steps.append("{\"rate_per_pub\":\(num(rate, 0)),\"offered\":\(num(o.offeredDeliveries, 0)),\"delivered\":\(num(got, 0)),\"ratio\":\(num(r.deliveryRatio, 4)),\"p99_us\":\(r.lat.totalCount > 0 ? r.lat.valueAtPercentile(99) : 0)}")
        last = r
        let stopGrowth = got < best * (1 + opts.rampMinGrowth)
        let stopRatio = got < o.offeredDeliveries * opts.rampMinRatio
        if got > best {
            best = got
            bestRate = rate
        }
        if stopGrowth || stopRatio { break }
    }
    var summary = "{\"tool\":\"gateway-loadtest\",\"scenario\":\(jsonString(opts.name)),\"label\":\(jsonString(opts.label)),\"kind\":\"ramp-summary\",\"target\":\(jsonString(opts.target.rawValue))"
    summary += ",\"tls\":\(opts.tls),\"tls_fraction\":\(num(opts.tlsFraction, 3))"
    if !opts.peerName.isEmpty { summary += ",\"peer\":\(jsonString(opts.peerName))" }
    if !opts.fsyncNote.isEmpty { summary += ",\"note\":\(jsonString(opts.fsyncNote))" }
    summary += ",\"saturation_delivered_msgs_s\":\(num(best, 0)),\"saturation_rate_per_pub\":\(num(bestRate, 0)),\"steps\":[\(steps.joined(separator: ","))]"
    summary += ",\"loadavg_end\":\(jsonString(last?.loadEnd ?? loadAverage()))}"
    writeAll(1, Array((summary + "\n").utf8))
    writeAll(2, Array("── ramp saturation: \(num(best, 0)) deliveries/s at \(num(bestRate, 0)) msg/s per publisher\n".utf8))
default:
    emit(runOnce(opts, tokens: tokens, nonce: nonce), table: opts.table)
}
