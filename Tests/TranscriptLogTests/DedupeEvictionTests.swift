// Cold-session eviction of dedupe windows (reliability.md G19): an idle session's window leaves memory and is
// rebuilt from the log by its next publish, and dedupe stays exact (the same answers as a window never evicted).

import Foundation
import Glibc
import Testing
import TranscriptLog

@Suite struct DedupeEvictionTests {
    static func options(_ dir: String, evictAfter seconds: Int) -> TranscriptLogOptions {
        var o = testOptions(dir, segmentMaxBytes: 16 << 10)
        o.dedupeWindowPerSession = 20
        o.dedupeMinWindowSeconds = 30
        o.dedupeMaxPerSession = 60
        o.dedupeIdleEvictionSeconds = seconds
        return o
    }

    static func nowMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// A seeded mix of new publishes, retries of old and recent ids, evictions and reopens, on two logs: one that
    /// evicts every window whenever it can, one that never evicts. Every answer (seq, duplicate) must be the same.
    @Test func evictedWindowsGiveTheSameAnswersAsKeptOnes() throws {
        try withTemporaryDirectory { a in
            try withTemporaryDirectory { b in
                var rng = SeededGenerator(seed: 0xC01D)
                var evicting = try TranscriptLog.open(Self.options(a, evictAfter: 60))
                var keeping = try TranscriptLog.open(Self.options(b, evictAfter: 0))
                let base = Self.nowMs()
                var published: [String: [AppendRequest]] = [:]
                var evictions = 0
                for step in 0..<1500 {
                    let session = "s\(Int.random(in: 0..<4, using: &rng))"
                    let ts = base + Int64(step) * 700  // the 30 s window holds about 43 steps
                    let action = Int.random(in: 0..<100, using: &rng)
                    if action < 4 {
                        evictions += evicting.evictIdleDedupe(nowMs: ts + 3_600_000)
                        continue
                    }
                    if step % 300 == 299 {  // a reopen now and then (each one is a chance for another test's fork to hold the lock)
                        try evicting.close()
                        try keeping.close()
                        evicting = try TranscriptLog.open(Self.options(a, evictAfter: 60))
                        keeping = try TranscriptLog.open(Self.options(b, evictAfter: 0))
                        continue
                    }
                    var r = event(session, step, dataBytes: 30)
                    r.timestampMs = ts
                    if action < 40, let old = published[session]?.randomElement(using: &rng) {
                        r.id = old.id  // a retry, recent or long out of the window
                    }
                    published[session, default: []].append(r)
                    let got = try evicting.append([r])
                    #expect(got == (try keeping.append([r])), "step \(step)")
                }
                #expect(evictions > 20)
                for (session, events) in published {
                    for e in events.suffix(80) {
                        #expect(
                            evicting.lookup(session: session, sub: e.sub, id: e.id)
                                == keeping.lookup(session: session, sub: e.sub, id: e.id))
                    }
                }
                try evicting.close()
                try keeping.close()
            }
        }
    }

    /// Memory per cold session: one session of 10,000 events with the default window (10,000 ids, 300 s): its
    /// window's bytes before and after eviction; a retry of its newest and oldest id after eviction is a duplicate;
    /// a log reopened long after the events holds no window in memory until the session publishes.
    @Test func coldSessionMemory() throws {
        try withTemporaryDirectory { dir in
            var o = testOptions(dir)
            o.dedupeIdleEvictionSeconds = 3600
            let base = Self.nowMs() - 20_000  // the newest event 10 s ago
            let last = base + 10_000
            var log = try TranscriptLog.open(o)
            let events = (1...10_000).map { n -> AppendRequest in
                var e = event("cold", n, dataBytes: 40)
                e.timestampMs = base + Int64(n)
                return e
            }
            for chunk in stride(from: 0, to: events.count, by: 500) { _ = try log.append(Array(events[chunk..<(chunk + 500)])) }
            let before = log.dedupeMemory
            #expect(before.evictedSessions == 0)
            #expect(log.evictIdleDedupe(nowMs: last + 3_599_000) == 0)  // not idle yet
            #expect(log.evictIdleDedupe(nowMs: last + 3_601_000) == 1)
            let after = log.dedupeMemory
            #expect(after.bytes == 0 && after.evictedSessions == 1)
            print("RELIABILITY: G19 dedupe window of one cold session of 10,000 ids: \(before.bytes) B before eviction, \(after.bytes) B after")
            #expect(try log.append([events[9_999]]) == [.duplicate(seq: 10_000)])
            #expect(try log.append([events[0]]) == [.duplicate(seq: 1)])
            #expect(log.dedupeMemory.bytes == before.bytes && log.dedupeMemory.evictedSessions == 0)
            try log.close()
            // Reopened with the session idle (newest event 10 s old, eviction after 1 s): no window rebuilt at open.
            o.dedupeIdleEvictionSeconds = 1
            log = try TranscriptLog.open(o)
            #expect(log.dedupeMemory.bytes == 0 && log.dedupeMemory.evictedSessions == 1)
            #expect(log.lookup(session: "cold", sub: events[5].sub, id: events[5].id) == 6)
            #expect(try log.append([events[5]]) == [.duplicate(seq: 6)])
            try log.close()
        }
    }
}
