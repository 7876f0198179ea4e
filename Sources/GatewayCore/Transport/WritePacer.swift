import CLWS

/// Write pacing: how the service thread makes each `send()` carry more frames as load grows
/// (docs/architecture.md, "Write pacing and the read budget"). Service thread only.
///
/// One core does a roughly fixed number of loopback sends per second whatever they carry, so under load the
/// gateway must send less often, not more (`../shared/perf-coalescing.md`). The pacer measures how busy the service
/// thread is (time spent in the callbacks that do the work, over 10 ms windows) and derives a flush interval from it:
/// 0 while the loop is idle or lightly loaded — a frame for a connection goes out in the same loop turn, as before —
/// and, while the loop stays busy, doubling from 100 µs up to `maxIntervalNs`. A connection whose socket was written
/// less than one interval ago is not asked for WRITEABLE at once: it waits on the pacer's list (bounded: each
/// connection is on it at most once) until its interval has passed, while its queue keeps filling, so its next write
/// coalesces everything that arrived meanwhile. Closes and the first write after a quiet spell are never paced.
final class WritePacer {
    /// The cap of the flush interval (`limits.write_pacing_max_us`); 0 turns pacing off.
    let maxIntervalNs: UInt64
    /// The current flush interval (0: no pacing).
    private(set) var intervalNs: UInt64 = 0
    /// The clock as of the start of the callback being run (one read per measured callback, not per frame).
    private(set) var nowNs: UInt64
    private var windowStartNs: UInt64
    private var busyNs: UInt64 = 0
    private var depth = 0
    private var enteredNs: UInt64 = 0

    /// Connections waiting for their interval to pass, each at most once (`Connection.paced`).
    private var waiting: [Connection] = []
    private var timer: OpaquePointer?
    private var timerDueNs: UInt64 = 0
    private var timerArmed = false
    /// The lws context the timer runs on; nil before the loop starts and once it is being destroyed.
    var context: OpaquePointer?

    /// Write requests deferred since the last ``takeDeferred()`` (a counter for `GET /metrics`).
    private var deferredTotal = 0

    func takeDeferred() -> Int {
        defer { deferredTotal = 0 }
        return deferredTotal
    }

    /// Busy fraction of a window above which the interval grows, and below which it shrinks.
    static let busyHigh = 0.75
    static let busyLow = 0.40
    static let windowNs: UInt64 = 10_000_000
    static let minIntervalNs: UInt64 = 100_000

    init(maxIntervalNs: UInt64) {
        self.maxIntervalNs = maxIntervalNs
        nowNs = MonotonicClock.nowNs()
        windowStartNs = nowNs
        // Without a timer (allocation failed) nothing is ever held back.
        timer = CLWS_timer_new(
            { user in
                guard let user else { return }
                Unmanaged<WritePacer>.fromOpaque(user).takeUnretainedValue().fire()
            }, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        // The context (and with it the timer list) is destroyed before the server that owns this pacer.
        CLWS_timer_free(timer)
    }

    // MARK: load measurement

    /// A callback that does work starts (nested calls count once).
    func enter() {
        depth += 1
        if depth == 1 {
            enteredNs = MonotonicClock.nowNs()
            nowNs = enteredNs
        }
    }

    /// The callback that did work ended: its time counts as busy; every 10 ms the interval is re-derived.
    func leave() {
        depth -= 1
        guard depth == 0 else { return }
        let now = MonotonicClock.nowNs()
        busyNs &+= now &- enteredNs
        nowNs = now
        // Under an event library the loop's timer can lag behind a busy loop: serve due waiters here too.
        if timerArmed && now >= timerDueNs {
            fire()
            return
        }
        let elapsed = now &- windowStartNs
        guard elapsed >= Self.windowNs else { return }
        let busy = Double(busyNs) / Double(elapsed)
        windowStartNs = now
        busyNs = 0
        guard maxIntervalNs > 0 else { return }
        if busy >= Self.busyHigh {
            intervalNs = min(maxIntervalNs, max(Self.minIntervalNs, intervalNs * 2))
        } else if busy <= Self.busyLow {
            // A long quiet spell (the window covers it) resets at once; a lighter load halves the interval.
            intervalNs = elapsed > 10 * Self.windowNs ? 0 : intervalNs / 2
            if intervalNs < Self.minIntervalNs / 2 { intervalNs = 0 }
        }
    }

    // MARK: pacing

    /// Whether `conn`'s write request must wait: true when it was written less than one interval ago (then it is
    /// queued here and the timer is armed for its due time).
    func holdBack(_ conn: Connection) -> Bool {
        guard intervalNs > 0, context != nil, timer != nil, conn.pendingClose == nil else { return false }
        let due = conn.lastWriteNs &+ intervalNs
        guard due > nowNs else { return false }
        if !conn.paced {
            conn.paced = true
            waiting.append(conn)
            deferredTotal += 1
        }
        if !timerArmed || due < timerDueNs { arm(at: due) }
        return true
    }

    /// Schedules the timer for `due` (monotonic ns).
    private func arm(at due: UInt64) {
        guard let context, let timer else { return }
        timerArmed = true
        timerDueNs = due
        CLWS_timer_schedule(context, timer, Int64((due &- nowNs) / 1_000) + 1)
    }

    /// The timer fired (or a timed callback found it due): every waiting connection whose interval has passed gets
    /// its WRITEABLE requested through ``onDue``; the rest wait for the next due time.
    private func fire() {
        enter()
        defer { leave() }
        timerArmed = false
        var keep: [Connection] = []
        var earliest = UInt64.max
        let due = waiting
        waiting = []
        for conn in due {
            conn.paced = false
            if conn.released || conn.writeRequested { continue }
            let at = conn.lastWriteNs &+ intervalNs
            if at <= nowNs || intervalNs == 0 {
                onDue?(conn)
            } else {
                conn.paced = true
                keep.append(conn)
                earliest = min(earliest, at)
            }
        }
        waiting = keep
        if !waiting.isEmpty { arm(at: earliest) }
    }

    /// Asks lws for the connection's WRITEABLE (set by ``ConnectionIO``).
    var onDue: ((Connection) -> Void)?
}
