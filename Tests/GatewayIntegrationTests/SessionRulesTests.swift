import Testing

@testable import GatewayCore

/// The pure rules of the Sessions/ and Transport/ layers, without sockets: the join cursor and the outbound queue.
@Suite("Session rules")
struct SessionRulesTests {
    @Test("join without since starts live at head + 1")
    func joinLive() {
        let c = JoinCursor(since: nil, epoch: nil, head: 7, firstHeld: 1, storeEpoch: "e1")
        #expect(c == JoinCursor(nextSeq: 8, trimmedFirst: nil, reset: false, catchingUp: false))
    }

    @Test("join with since replays from since + 1")
    func joinSince() {
        let c = JoinCursor(since: 3, epoch: "e1", head: 7, firstHeld: 1, storeEpoch: "e1")
        #expect(c == JoinCursor(nextSeq: 4, trimmedFirst: nil, reset: false, catchingUp: true))
        let atHead = JoinCursor(since: 7, epoch: nil, head: 7, firstHeld: 1, storeEpoch: "e1")
        #expect(atHead == JoinCursor(nextSeq: 8, trimmedFirst: nil, reset: false, catchingUp: false))
    }

    @Test("join behind retention is told trimmed and starts at the first held seq")
    func joinTrimmed() {
        let c = JoinCursor(since: 2, epoch: nil, head: 100, firstHeld: 50, storeEpoch: "e1")
        #expect(c == JoinCursor(nextSeq: 50, trimmedFirst: 50, reset: false, catchingUp: true))
        // since + 1 == firstHeld: nothing was lost, no trimmed.
        let edge = JoinCursor(since: 49, epoch: nil, head: 100, firstHeld: 50, storeEpoch: "e1")
        #expect(edge.trimmedFirst == nil && edge.nextSeq == 50)
    }

    @Test("join from another epoch or beyond the head resets to the first held event")
    func joinReset() {
        let other = JoinCursor(since: 5, epoch: "old", head: 10, firstHeld: 3, storeEpoch: "e1")
        #expect(other == JoinCursor(nextSeq: 3, trimmedFirst: nil, reset: true, catchingUp: true))
        let beyond = JoinCursor(since: 11, epoch: nil, head: 10, firstHeld: 1, storeEpoch: "e1")
        #expect(beyond == JoinCursor(nextSeq: 1, trimmedFirst: nil, reset: true, catchingUp: true))
        let empty = JoinCursor(since: 4, epoch: nil, head: 0, firstHeld: 1, storeEpoch: "e1")
        #expect(empty == JoinCursor(nextSeq: 1, trimmedFirst: nil, reset: true, catchingUp: false))
    }

    @Test("the outbound queue counts bytes, consumes from the head and compacts")
    func queueConsumes() {
        var q = OutboundQueue()
        for i in 0..<200 { q.append(OutboundFrame(payload: [UInt8](repeating: 1, count: i % 7 + 1), ephemeral: false)) }
        let total = (0..<200).reduce(0) { $0 + $1 % 7 + 1 }
        #expect(q.bytes == total)
        var seen = 0
        for _ in 0..<150 {
            seen += q.first?.payload.count ?? 0
            q.removeFirst()
            q.compact()
        }
        #expect(q.bytes == total - seen)
        #expect(q.frames.count - q.head == 50)
        while !q.isEmpty { q.removeFirst() }
        q.compact()
        #expect(q.bytes == 0 && q.head == 0 && q.frames.isEmpty)
    }

    @Test("ephemeral eviction drops the oldest ephemerals only, and nothing when it cannot make room")
    func queueEviction() {
        var q = OutboundQueue()
        q.append(OutboundFrame(payload: [UInt8](repeating: 0, count: 10), ephemeral: true))
        q.append(OutboundFrame(payload: [UInt8](repeating: 1, count: 10), ephemeral: false))
        q.append(OutboundFrame(payload: [UInt8](repeating: 2, count: 10), ephemeral: true))
        // Needs 15 under a cap of 40: dropping the first ephemeral (10) is enough.
        let madeRoom = q.evictEphemeral(toFit: 15, cap: 40)
        #expect(madeRoom)
        #expect(q.bytes == 20)
        #expect(q.frames.map { $0.payload.first } == [1, 2])
        // 35 more cannot fit under 40 even without ephemerals: nothing is dropped.
        let impossible = q.evictEphemeral(toFit: 35, cap: 40)
        #expect(!impossible)
        #expect(q.bytes == 20)
    }
}
