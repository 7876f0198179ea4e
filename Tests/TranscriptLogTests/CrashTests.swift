// T1: kill -9 under write load. A child process (`transcript-crash-child`) appends with fsync `always` and
// reports each acknowledged event; the parent kills it at random moments and checks every acked event is in
// the log, in order, exactly once, byte-identical, with dense seqs.

import Foundation
import Glibc
import Testing
import TranscriptLog
import TranscriptLogTesting

@Suite struct CrashTests {
    /// The helper binary sits next to the test bundle in the build directory.
    static var childPath: String { BuiltProduct.path("transcript-crash-child") }

    @Test func killNineDuringAppends() throws {
        let child = Self.childPath
        try #require(FileManager.default.isExecutableFile(atPath: child), "build transcript-crash-child first: \(child)")
        var rng = SystemRandomNumberGenerator()
        let seed = UInt64.random(in: 0...UInt64.max, using: &rng)
        var random = SeededGenerator(seed: seed)
        try withTemporaryDirectory { dir in
            // Every acked (session, seq) → (round, n): the expected id and data.
            var acked: [String: [UInt64: (round: Int, n: Int)]] = [:]
            var ackedTotal = 0
            for round in 0..<20 {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: child)
                p.arguments = [dir, String(round)]
                let out = Pipe()
                p.standardOutput = out
                try p.run()
                let fd = out.fileHandleForReading.fileDescriptor
                var text = ""
                // Wait for "ready" (bounded: 10 s), then let it append for a random 0-150 ms and kill it.
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                var buffer = [UInt8](repeating: 0, count: 1 << 16)
                for _ in 0..<100 where !text.contains("ready\n") {
                    if poll(&pfd, 1, 100) > 0 {
                        let n = read(fd, &buffer, buffer.count)
                        if n <= 0 { break }
                        text += String(decoding: buffer[0..<n], as: UTF8.self)
                    }
                }
                try #require(text.hasPrefix("ready\n"), "child did not start: \(text.prefix(200)) (seed \(seed))")
                usleep(UInt32.random(in: 0...150_000, using: &random))
                kill(p.processIdentifier, SIGKILL)
                p.waitUntilExit()
                text += String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                // Only complete lines count: the kill can cut the last one.
                var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
                lines.removeLast()
                for line in lines.dropFirst() {
                    let f = line.split(separator: " ")
                    guard f.count == 3, let n = Int(f[0]), let seq = UInt64(f[2]) else {
                        Issue.record("child said: \(line) (seed \(seed))")
                        continue
                    }
                    #expect(acked[String(f[1]), default: [:]].updateValue((round, n), forKey: seq) == nil, "seq acked twice")
                    ackedTotal += 1
                }
                let log = try TranscriptLog.open(testOptions(dir))
                for session in ["s0", "s1", "s2"] {
                    let records = try readAll(log, session, page: 5000)
                    #expect(records.map(\.seq) == (0..<UInt64(records.count)).map { $0 + 1 }, "dense, ordered (seed \(seed))")
                    #expect(Set(records.map(\.id)).count == records.count, "no duplicate (seed \(seed))")
                    let bySeq = Dictionary(uniqueKeysWithValues: records.map { ($0.seq, $0) })
                    for (seq, ev) in acked[session] ?? [:] {
                        let r = bySeq[seq]
                        #expect(r?.id == "r\(ev.round)-\(ev.n)", "acked \(session)#\(seq) lost (round \(round), seed \(seed))")
                        let pad = String(repeating: "x", count: ev.n % 50)
                        #expect(r?.data == Array("{\"r\":\(ev.round),\"n\":\(ev.n),\"pad\":\"\(pad)\"}".utf8))
                    }
                }
                try log.close()
            }
            #expect(ackedTotal > 100, "the child acked too little to prove anything (\(ackedTotal))")
        }
    }
}
