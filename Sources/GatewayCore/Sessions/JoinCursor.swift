/// Where a `join` starts a subscription (protocol.md, "join"): from `since` and `epoch` against the session's
/// acked head and first held seq. A pure function of its inputs, so every engine and node computes the same.
struct JoinCursor: Equatable {
    /// The next seq the subscriber needs.
    var nextSeq: UInt64
    /// `joined.trimmed_first`: events before it were removed by retention.
    var trimmedFirst: UInt64?
    /// `joined.reset`: the client's cursor is from another epoch or beyond the head; it starts over.
    var reset: Bool
    /// Whether replay must run before the subscription is live.
    var catchingUp: Bool

    init(nextSeq: UInt64, trimmedFirst: UInt64?, reset: Bool, catchingUp: Bool) {
        self.nextSeq = nextSeq
        self.trimmedFirst = trimmedFirst
        self.reset = reset
        self.catchingUp = catchingUp
    }

    /// The cursor for a `join` with `since`/`epoch` (both optional) against the session's acked `head`, its
    /// `firstHeld` seq (head + 1 when nothing is held) and the store's epoch.
    init(since: UInt64?, epoch: String?, head: UInt64, firstHeld: UInt64, storeEpoch: String) {
        var next = head + 1
        var trimmedFirst: UInt64? = nil
        var reset = false
        if let since {
            if (epoch != nil && epoch != storeEpoch) || since > head {
                reset = true
                next = min(firstHeld, head + 1)
            } else if since + 1 < firstHeld {
                trimmedFirst = firstHeld
                next = firstHeld
            } else {
                next = since + 1
            }
        }
        self.init(nextSeq: next, trimmedFirst: trimmedFirst, reset: reset, catchingUp: next <= head)
    }

    /// The cursor for a `join` with `last` (v1.1 §4): the last `last` durable events up to the acked `head`, from
    /// `firstHeld` if fewer are held; never `trimmed` or `reset`.
    init(last: Int, head: UInt64, firstHeld: UInt64) {
        let wanted = head >= UInt64(last) ? head - UInt64(last) + 1 : 1
        let next = max(wanted, min(firstHeld, head + 1))
        self.init(nextSeq: next, trimmedFirst: nil, reset: false, catchingUp: next <= head)
    }
}
