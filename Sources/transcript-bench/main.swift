// transcript-bench: throughput and latency of the transcript log (figures in docs/benchmarks.md).
//
// Usage: transcript-bench [--large] [--restart GIB [--cold]] [--dir PATH] [--events N]
//   default: CRC32C speed; append throughput per fsync policy for 200 B and 2 KB events (batches of 256,
//            16 sessions); p50/p99 batch-commit latency with `always`.
//   --large: also builds a 1 GiB log, times reading the last 1,000 events of one session, and open/recovery.
//   --restart GIB: only builds a GIB GiB log (200 B events, 16 sessions, 64 MiB segments, fsync never) and times
//            open with a full scan (index checkpoints off), the first open with checkpoints on when none exist yet
//            (it writes them), and open with checkpoints; --cold also drops the page cache before each (root).
// Files go to --dir (default /tmp/transcript-bench-<pid>) and are deleted afterwards.

import Foundation
import Glibc
import TranscriptLog

struct Config {
    var large = false
    var dir = "/tmp/transcript-bench-\(getpid())"
    var events = 400_000
    var restartGiB = 0
    var cold = false
}

func parseArguments() -> Config {
    var c = Config()
    var args = CommandLine.arguments.dropFirst()
    while let a = args.popFirst() {
        switch a {
        case "--large": c.large = true
        case "--restart": if let v = args.popFirst(), let n = Int(v), n > 0 { c.restartGiB = n }
        case "--cold": c.cold = true
        case "--dir": if let v = args.popFirst() { c.dir = v }
        case "--events": if let v = args.popFirst(), let n = Int(v), n > 0 { c.events = n }
        default:
            print("usage: transcript-bench [--large] [--restart GIB [--cold]] [--dir PATH] [--events N]")
            exit(2)
        }
    }
    return c
}

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

func removeTree(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

/// `count` events of about `size` bytes on disk, round-robin over `sessions`.
func makeBatch(start: Int, count: Int, size: Int, sessions: Int) -> [AppendRequest] {
    (start..<(start + count)).map { i in
        // 18 + 19 header/fixed, session ~4, id ~9, kind 12, sub 7, role 5: about 74 bytes before data.
        let data = Array("{\"n\":\(i),\"text\":\"".utf8) + [UInt8](repeating: 0x78, count: max(0, size - 100)) + Array("\"}".utf8)
        return AppendRequest(
            session: "s\(i % sessions)", id: "e\(i)", kind: "chat.message", sub: "agent-1", role: "agent",
            timestampMs: 1_767_225_600_000 + Int64(i), data: data)
    }
}

func benchCRC() {
    let bytes = [UInt8](repeating: 0x5A, count: 64 << 20)
    var sink: UInt32 = 0
    let start = ContinuousClock.now
    for _ in 0..<8 { sink &+= CRC32C.checksum(bytes) }
    let s = seconds(ContinuousClock.now - start)
    let impl = CRC32C.usesHardware ? "crc32 instruction" : "slicing-by-8"
    print(String(format: "crc32c (%@): %.2f GB/s (512 MiB, checksum %08x)", impl, Double(8 * bytes.count) / s / 1e9, sink))
}

func policyName(_ p: FsyncPolicy) -> String {
    switch p {
    case .always: return "always"
    case .interval(let ms): return "interval(\(ms) ms)"
    case .never: return "never"
    }
}

func benchAppend(_ c: Config, policy: FsyncPolicy, size: Int, events: Int) throws {
    let dir = c.dir + "/append"
    removeTree(dir)
    defer { removeTree(dir) }
    var o = TranscriptLogOptions(directory: dir)
    o.fsync = policy
    let log = try TranscriptLog.open(o)
    let batchSize = 256
    let batches = (0..<(events / batchSize)).map { makeBatch(start: $0 * batchSize, count: batchSize, size: size, sessions: 16) }
    var latencies: [Double] = []
    latencies.reserveCapacity(batches.count)
    let start = ContinuousClock.now
    var last = start
    for b in batches {
        _ = try log.append(b)
        if case .interval(let ms) = policy, last.duration(to: .now) >= .milliseconds(ms) {
            try log.sync()  // the caller's timer
            last = .now
        }
        let now = ContinuousClock.now
        latencies.append(seconds(now - last) * 1e6)
        last = now
    }
    try log.sync()
    let total = seconds(ContinuousClock.now - start)
    try log.close()
    let n = batches.count * batchSize
    let onDisk = Double(batches.reduce(0) { $0 + $1.reduce(0) { $0 + 74 + $1.data.count } })
    var line = String(
        format: "append %-18@ %5d B events: %9.0f events/s, %7.1f MB/s (%d events, batches of %d)", policyName(policy) as NSString,
        size, Double(n) / total, onDisk / total / 1e6, n, batchSize)
    if policy == .always {
        latencies.sort()
        let p50 = latencies[latencies.count / 2]
        let p99 = latencies[min(latencies.count - 1, latencies.count * 99 / 100)]
        line += String(format: "; batch commit p50 %.0f us, p99 %.0f us", p50, p99)
    }
    print(line)
}

/// Appends 200 B events round-robin over `sessions`, 1,024 per call, until about `bytes` are on disk.
/// - Returns: the events and bytes written.
func fill(_ log: TranscriptLog, bytes target: Int, sessions: Int) throws -> (events: Int, bytes: Int) {
    var written = 0
    var i = 0
    while written < target {  // bounded: each call writes 1,024 events
        let batch = makeBatch(start: i, count: 1024, size: 200, sessions: sessions)
        _ = try log.append(batch)
        written += batch.reduce(0) { $0 + 74 + $1.data.count }
        i += 1024
    }
    return (i, written)
}

/// Options for a scratch log in `dir` (emptied first), fsync `never`: building a large log quickly.
func scratchOptions(_ dir: String) -> TranscriptLogOptions {
    removeTree(dir)
    var o = TranscriptLogOptions(directory: dir)
    o.fsync = .never
    return o
}

func benchLarge(_ c: Config) throws {
    let dir = c.dir + "/large"
    let o = scratchOptions(dir)
    defer { removeTree(dir) }
    var log = try TranscriptLog.open(o)
    let sessions = 16
    let buildStart = ContinuousClock.now
    let (i, written) = try fill(log, bytes: 1 << 30, sessions: sessions)
    try log.sync()
    print(String(format: "built %.2f GiB log: %d events in %d sessions in %.1f s", Double(written) / Double(1 << 30), i, sessions, seconds(ContinuousClock.now - buildStart)))
    func timeRead(_ log: TranscriptLog, _ label: String) throws {
        let head = log.head(session: "s7")
        var times: [Double] = []
        for _ in 0..<20 {
            let t0 = ContinuousClock.now
            let r = try log.read(session: "s7", after: head - 1000, limit: 1000, maxBytes: 16 << 20)
            times.append(seconds(ContinuousClock.now - t0) * 1e3)
            guard r.records.count == 1000, r.records.last?.seq == head else {
                print("read returned \(r.records.count) records")
                exit(1)
            }
        }
        let first = times[0]
        times.sort()
        print(String(format: "read last 1,000 events of one session (%@): first %.2f ms, median %.2f ms, max %.2f ms", label, first, times[10], times[19]))
    }
    try timeRead(log, "writer, 1 of 16 sessions")
    try log.close()
    log = try TranscriptLog.open(o)
    let r = log.recovery
    print(String(format: "open/recovery of the 1 GiB log: %.2f s (%d records, %d segments scanned, page cache warm)",
        Double(r.durationNanoseconds) / 1e9, r.recordsScanned, r.segmentsScanned))
    try timeRead(log, "after reopen")
    try log.close()
    // Cold cache: drop the page cache if we are allowed to (root), then open again.
    sync()
    if let f = fopen("/proc/sys/vm/drop_caches", "w") {
        fputs("3\n", f)
        fclose(f)
        log = try TranscriptLog.open(o)
        print(String(format: "open/recovery of the 1 GiB log after dropping the page cache: %.2f s", Double(log.recovery.durationNanoseconds) / 1e9))
        try timeRead(log, "cold reopen")
        try log.close()
    }
}

/// Restart time of a large log, with and without index checkpoints (docs/benchmarks.md, "Restart").
func benchRestart(_ c: Config) throws {
    let dir = c.dir + "/restart"
    var o = scratchOptions(dir)
    defer { removeTree(dir) }
    o.indexCheckpoints = false  // built without, so the "first open" below is the upgrade path
    o.dedupeIdleEvictionSeconds = 0  // the events are months old: with eviction, open would skip the dedupe rebuild
    let buildStart = ContinuousClock.now
    let log = try TranscriptLog.open(o)
    let (i, written) = try fill(log, bytes: c.restartGiB << 30, sessions: 16)
    try log.close()
    print(String(format: "built a %.2f GiB log: %d events in 16 sessions in %.1f s", Double(written) / Double(1 << 30), i, seconds(ContinuousClock.now - buildStart)))
    func timeOpen(_ label: String, checkpoints: Bool) throws {
        if c.cold {
            sync()
            if let f = fopen("/proc/sys/vm/drop_caches", "w") {
                fputs("3\n", f)
                fclose(f)
            }
        }
        var options = o
        options.indexCheckpoints = checkpoints
        let t0 = ContinuousClock.now
        let log = try TranscriptLog.open(options)
        let wall = seconds(ContinuousClock.now - t0)
        let r = log.recovery
        guard log.head(session: "s7") == UInt64(i / 16) else {
            print("recovered head \(log.head(session: "s7")), expected \(i / 16)")
            exit(1)
        }
        try log.close()
        print(String(format: "%@: %.2f s (%d records; %d segments scanned, %d from checkpoints, %d checkpoints written; page cache %@)",
            label, wall, r.recordsScanned, r.segmentsScanned, r.segmentsFromCheckpoint, r.checkpointsWritten, c.cold ? "dropped" : "warm"))
    }
    try timeOpen("open, full scan (checkpoints off)", checkpoints: false)
    try timeOpen("first open with checkpoints (writes them)", checkpoints: true)
    try timeOpen("open with checkpoints", checkpoints: true)
    try timeOpen("open with checkpoints, again", checkpoints: true)
}

let config = parseArguments()
if config.restartGiB > 0 {
    do {
        try FileManager.default.createDirectory(atPath: config.dir, withIntermediateDirectories: true)
        defer { removeTree(config.dir) }
        try benchRestart(config)
    } catch {
        print("benchmark failed: \(error)")
        exit(1)
    }
    exit(0)
}
do {
    removeTree(config.dir)
    try FileManager.default.createDirectory(atPath: config.dir, withIntermediateDirectories: true)
    defer { removeTree(config.dir) }
    benchCRC()
    for size in [200, 2048] {
        let events = size == 200 ? config.events : config.events / 4
        for policy in [FsyncPolicy.always, .interval(milliseconds: 10), .never] {
            try benchAppend(config, policy: policy, size: size, events: events)
        }
    }
    if config.large { try benchLarge(config) }
} catch {
    print("benchmark failed: \(error)")
    exit(1)
}
