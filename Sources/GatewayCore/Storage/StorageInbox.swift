import TranscriptLog

/// What ``EventStore/submit(_:)`` did with a publish. Every refusal is answered `unavailable` by the caller
/// (docs/protocol.md §6 lists the messages); the connection lives.
enum SubmitResult: Sendable, Equatable {
    /// Queued for the next batch.
    case accepted
    /// Refused: the inbox holds its most publishes (``StorageInbox/maxCount``).
    case queueFull
    /// Refused: the publishes accepted and not yet answered would exceed `limits.storage_inbox_bytes`.
    case bytesFull
    /// Refused: the engine is stopping, or cannot write (Redis unreachable).
    case unavailable
}

/// The publishes an engine accepted and has not answered yet, bounded by count and by bytes
/// (`limits.storage_inbox_bytes`). Each engine keeps one inside the Mutex its `submit` takes, so both engines
/// admit by the same rule.
///
/// The count bounds the publishes waiting for the writer thread. The bytes cover each publish from `submit` until
/// its result is handed back (``release(_:)``): the batch the writer is committing counts too, so the publishes an
/// engine holds stay within the budget, plus at most one publish (an empty budget admits any one publish, so an
/// event larger than the budget is still stored). Full: the publish is refused, never queued.
struct StorageInbox {
    /// Publishes waiting for the writer thread, in acceptance order.
    private(set) var queued: [PendingAppend] = []
    /// ``cost(_:)`` of every publish accepted and not yet released (queued or being committed).
    private(set) var bytes = 0
    /// The most publishes waiting.
    let maxCount: Int
    /// `limits.storage_inbox_bytes`.
    let maxBytes: Int

    init(maxCount: Int, maxBytes: Int) {
        self.maxCount = max(1, maxCount)
        self.maxBytes = max(1, maxBytes)
    }

    var count: Int { queued.count }
    var isEmpty: Bool { queued.isEmpty }

    /// Queues `item` if both bounds allow it.
    mutating func admit(_ item: PendingAppend) -> SubmitResult {
        guard queued.count < maxCount else { return .queueFull }
        let cost = Self.cost(item.request)
        guard bytes == 0 || bytes + cost <= maxBytes else { return .bytesFull }
        queued.append(item)
        bytes += cost
        return .accepted
    }

    /// Takes up to `limit` of the oldest queued publishes (all by default; the whole inbox is an O(1) move). Their
    /// bytes stay counted until ``release(_:)``.
    mutating func take(upTo limit: Int = .max) -> [PendingAppend] {
        if queued.count <= limit {
            let all = queued
            queued = []
            return all
        }
        let head = Array(queued.prefix(limit))
        queued.removeFirst(limit)
        return head
    }

    /// The results of `items` were handed back: their bytes leave the budget.
    mutating func release(_ items: some Sequence<PendingAppend>) {
        for item in items { bytes -= Self.cost(item.request) }
        bytes = max(0, bytes)
    }

    /// What a publish counts against the budget: its data and its strings, as the engine holds them.
    static func cost(_ r: AppendRequest) -> Int {
        r.data.count + r.session.utf8.count + r.id.utf8.count + r.kind.utf8.count + r.sub.utf8.count
            + r.role.utf8.count
    }
}
