// T12: a seeded random walk of appends (with duplicate ids), clean reopens, power cuts with torn tails,
// disk-full, and bit flips, checked against an in-memory model after every step. A failure prints its seed;
// set TRANSCRIPT_MODEL_SEED to replay it and TRANSCRIPT_MODEL_STEPS to run longer (CI uses 10,000).

import Foundation
import Glibc
import Testing
import TranscriptLog

@Suite struct ModelTests {
    struct Model {
        var events: [String: [AppendRequest]] = [:]
        let window: Int

        func seq(of r: AppendRequest) -> UInt64? {
            guard let list = events[r.session] else { return nil }
            let recent = list.suffix(window)
            guard let i = recent.lastIndex(where: { $0.sub == r.sub && $0.id == r.id }) else { return nil }
            return UInt64(i + 1)
        }

        /// The outcomes `append` must give: the window is the last `window` records before the batch, plus the batch.
        mutating func apply(_ batch: [AppendRequest]) -> [AppendOutcome] {
            let before = self
            var inBatch: [String: UInt64] = [:]
            var out: [AppendOutcome] = []
            for r in batch {
                let key = "\(r.session)\u{0}\(r.sub)\u{0}\(r.id)"
                if let s = before.seq(of: r) ?? inBatch[key] {
                    out.append(.duplicate(seq: s))
                    continue
                }
                events[r.session, default: []].append(r)
                let s = UInt64(events[r.session]!.count)
                inBatch[key] = s
                out.append(.appended(seq: s))
            }
            return out
        }
    }

    @Test func randomizedModel() throws {
        let env = ProcessInfo.processInfo.environment
        let seed = env["TRANSCRIPT_MODEL_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 0...UInt64.max)
        let steps = env["TRANSCRIPT_MODEL_STEPS"].flatMap { Int($0) } ?? 2_000
        var rng = SeededGenerator(seed: seed)
        let io = MemoryFileIO(directories: ["/mem"])
        var o = testOptions("/mem/log", fsync: .always, segmentMaxBytes: 8192)
        o.io = io
        o.dedupeWindowPerSession = 20
        o.dedupeMinWindowSeconds = 0  // the model counts ids
        var model = Model(window: 20)
        var log = try TranscriptLog.open(o)
        var n = 0
        let context = "seed \(seed) (TRANSCRIPT_MODEL_SEED=\(seed) to replay)"

        func check(_ step: Int) throws {
            for s in ["s0", "s1", "s2", "s3"] {
                let got = try readAll(log, s, page: 500)
                let want = model.events[s] ?? []
                #expect(got.count == want.count, "step \(step) \(s): \(got.count) vs \(want.count); \(context)")
                for (r, e) in zip(got, want) where r.id != e.id || r.data != e.data || r.sub != e.sub {
                    Issue.record("step \(step) \(s)#\(r.seq) differs; \(context)")
                    break
                }
                #expect(log.head(session: s) == UInt64(want.count), "step \(step); \(context)")
            }
        }

        for step in 0..<steps {
            let action = Int.random(in: 0..<100, using: &rng)
            switch action {
            case 0..<70:  // append a batch, some ids repeated
                var batch: [AppendRequest] = []
                for _ in 0..<Int.random(in: 1...8, using: &rng) {
                    let session = "s\(Int.random(in: 0..<4, using: &rng))"
                    let reuse = Int.random(in: 0..<5, using: &rng) == 0 && n > 0
                    let id = reuse ? Int.random(in: max(0, n - 40)..<n, using: &rng) : n
                    if !reuse { n += 1 }
                    var e = event(session, id, sub: "p\(id % 2)", dataBytes: Int.random(in: 5...200, using: &rng))
                    e.data = eventData(id, 30)  // same id, same bytes: a true retry
                    batch.append(e)
                }
                let got = try log.append(batch)
                let want = model.apply(batch)
                #expect(got == want, "step \(step) append; \(context)")
            case 70..<78:  // clean reopen
                try log.close()
                log = try TranscriptLog.open(o)
            case 78..<86:  // power cut, the unsynced tail maybe torn: everything acked survives
                io.powerCut(tear: Bool.random(using: &rng), using: &rng)
                log = try TranscriptLog.open(o)
            case 86..<93:  // disk full part-way through a batch
                io.setCapacity(io.usedBytes() + Int.random(in: 0...600, using: &rng))
                let batch = (0..<Int.random(in: 1...6, using: &rng)).map { k -> AppendRequest in
                    defer { n += 1 }
                    return event("s\(k % 4)", n, dataBytes: 100)
                }
                switch Result(catching: { () throws(TranscriptError) in try log.append(batch) }) {
                case .success(let got):
                    #expect(got == model.apply(batch), "step \(step) append near full; \(context)")
                case .failure(let e):
                    #expect(e.code == .diskFull, "step \(step): \(e); \(context)")
                }
                io.setCapacity(nil)
            default:  // flip one bit in a record that has a record after it: open must refuse, then recover
                try log.close()
                let files = try io.listDirectory("/mem/log").filter { $0.hasSuffix(".tlog") }.sorted()
                let target = files[Int.random(in: 0..<files.count, using: &rng)]
                let path = "/mem/log/" + target
                let flipped: (offset: Int, mask: UInt8)? = io.withFile(path) { bytes in
                    var starts: [Int] = []
                    var at = segmentHeaderSize
                    while at + 18 <= bytes.count {
                        starts.append(at)
                        at += 18 + (Int(bytes[at + 2]) | Int(bytes[at + 3]) << 8 | Int(bytes[at + 4]) << 16 | Int(bytes[at + 5]) << 24)
                    }
                    guard starts.count >= 2 || (target != files.last && !starts.isEmpty) else { return nil }
                    let k = Int.random(in: 0..<(target == files.last ? starts.count - 1 : starts.count), using: &rng)
                    let end = k + 1 < starts.count ? starts[k + 1] : bytes.count
                    let offset = Int.random(in: starts[k]..<end, using: &rng)
                    let mask = UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
                    bytes[offset] ^= mask
                    return (offset, mask)
                } ?? nil
                if let (offset, mask) = flipped {
                    // A full scan refuses it (a checkpointed open scans only the active segment: G17).
                    var scan = o
                    scan.indexCheckpoints = false
                    let e = expectError(.corrupted) { _ = try TranscriptLog.open(scan) }
                    #expect(e?.segment == target, "step \(step); \(context)")
                    _ = io.withFile(path) { bytes in bytes[offset] ^= mask }  // undo, so the model stays valid
                }
                log = try TranscriptLog.open(o)
            }
            if action >= 70 || step % 25 == 0 { try check(step) }
        }
        try check(steps)
        try log.close()
    }
}
