// Child process for the crash test (TranscriptLogTests `killNineDuringAppends`, reliability.md T1): appends
// batches with fsync `always` and reports every acknowledged event on stdout, one line each, only after
// `append` returned. The parent kills it with SIGKILL at a random moment and checks the log afterwards.
//
// Usage: transcript-crash-child <directory> <round>
// Output: "ready\n", then "<n> <session> <seq>\n" per acknowledged event. Event n of round r has id "r<r>-<n>",
// session "s<n % 3>", and data crashChildData(r, n) (the test recomputes it to compare bytes).

import Glibc
import TranscriptLog

func emit(_ line: String) {
    var bytes = Array(line.utf8)
    bytes.append(0x0A)
    bytes.withUnsafeBytes { raw in
        var done = 0
        // Bounded: each write advances or fails (the parent closed the pipe: stop).
        while done < raw.count {
            let n = write(1, raw.baseAddress! + done, raw.count - done)
            if n <= 0 { exit(3) }
            done += n
        }
    }
}

let args = CommandLine.arguments
guard args.count == 3, let round = Int(args[2]) else {
    emit("usage: transcript-crash-child <directory> <round>")
    exit(2)
}
var options = TranscriptLogOptions(directory: args[1])
options.fsync = .always
options.segmentMaxBytes = 64 << 10  // small segments: kills also land around rolls
let log: TranscriptLog
do {
    log = try TranscriptLog.open(options)
} catch {
    emit("open failed: \(error)")
    exit(1)
}
emit("ready")
var rng = SystemRandomNumberGenerator()
var n = 0
let deadline = ContinuousClock.now + .seconds(20)  // bounded even if the parent never kills us
while ContinuousClock.now < deadline {
    let size = Int.random(in: 1...32, using: &rng)
    var batch: [AppendRequest] = []
    for k in 0..<size {
        let i = n + k
        let pad = String(repeating: "x", count: i % 50)
        batch.append(
            AppendRequest(
                session: "s\(i % 3)", id: "r\(round)-\(i)", kind: "chat.message", sub: "agent", role: "agent",
                timestampMs: Int64(i), data: Array("{\"r\":\(round),\"n\":\(i),\"pad\":\"\(pad)\"}".utf8)))
    }
    do {
        let outcomes = try log.append(batch)
        for (k, o) in outcomes.enumerated() { emit("\(n + k) s\((n + k) % 3) \(o.seq)") }
    } catch {
        emit("append failed: \(error)")
        exit(1)
    }
    n += size
}
exit(0)
