import GatewayProtocol
import Glibc

/// Timestamp parsing and display for event lines, tables and exports.
enum Timestamps {
    /// Broken-down time of `ms` in the local time zone (`TZ`) or UTC.
    static func components(_ ms: Int64, local: Bool) -> tm {
        // Floor division written so that no value read from a log (Int64.min included) can overflow.
        var seconds = time_t(ms >= 0 ? ms / 1_000 : -((-(ms + 1)) / 1_000) - 1)
        var parts = tm()
        if local { localtime_r(&seconds, &parts) } else { gmtime_r(&seconds, &parts) }
        return parts
    }

    /// Milliseconds within the second, 0...999.
    static func millisecondPart(_ ms: Int64) -> Int64 { ((ms % 1_000) + 1_000) % 1_000 }

    static func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }

    /// `YYYY-MM-DD` of broken-down time.
    static func date(_ t: tm) -> String {
        "\(t.tm_year + 1900)-\(two(t.tm_mon + 1))-\(two(t.tm_mday))"
    }

    /// `HH:MM:SS` of broken-down time.
    static func clock(_ t: tm) -> String {
        "\(two(t.tm_hour)):\(two(t.tm_min)):\(two(t.tm_sec))"
    }

    /// Local time for an event line: `HH:MM:SS.mmm` for today, `YYYY-MM-DD HH:MM:SS.mmm` otherwise.
    /// - Parameters:
    ///   - ms: Unix milliseconds.
    ///   - nowMs: The current time (decides "today").
    /// - Returns: The display text.
    static func eventTime(_ ms: Int64, nowMs: Int64) -> String {
        let t = components(ms, local: true)
        let now = components(nowMs, local: true)
        let m = millisecondPart(ms)
        let fraction = m < 10 ? "00\(m)" : m < 100 ? "0\(m)" : "\(m)"
        let time = clock(t) + "." + fraction
        if t.tm_year == now.tm_year && t.tm_yday == now.tm_yday { return time }
        return date(t) + " " + time
    }

    /// Local `YYYY-MM-DD HH:MM:SS` (tables).
    static func localDateTime(_ ms: Int64) -> String {
        let t = components(ms, local: true)
        return date(t) + " " + clock(t)
    }

    /// UTC `YYYY-MM-DD HH:MM:SSZ` (exports).
    static func utcDateTime(_ ms: Int64) -> String {
        let t = components(ms, local: false)
        return date(t) + " " + clock(t) + "Z"
    }

    /// UTC `HH:MM:SSZ` (exports within one day).
    static func utcClock(_ ms: Int64) -> String {
        clock(components(ms, local: false)) + "Z"
    }

    /// UTC `YYYY-MM-DD` (exports).
    static func utcDate(_ ms: Int64) -> String {
        date(components(ms, local: false))
    }

    /// The current time in Unix milliseconds.
    static func nowMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000 + Int64(ts.tv_nsec) / 1_000_000
    }
}
