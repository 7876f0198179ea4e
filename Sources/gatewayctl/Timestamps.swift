import GatewayProtocol
import Glibc

/// Timestamp parsing and display for event lines, tables and exports.
enum Timestamps {
    /// Parses the gateway's `ts` (`YYYY-MM-DDTHH:MM:SS[.fff]Z`) into Unix milliseconds.
    /// - Parameters:
    ///   - text: The timestamp text (untrusted).
    /// - Returns: Milliseconds, or `nil` if the text is not in that form.
    static func parseRFC3339(_ text: String) -> Int64? {
        let b = Array(text.utf8)
        guard b.count >= 20, b.count <= 40, b.last == UInt8(ascii: "Z") || b.last == UInt8(ascii: "z") else {
            return nil
        }
        func digits(_ start: Int, _ count: Int) -> Int64? {
            guard start + count <= b.count else { return nil }
            var v: Int64 = 0
            for i in start..<(start + count) {
                guard b[i] >= 0x30 && b[i] <= 0x39 else { return nil }
                v = v * 10 + Int64(b[i] - 0x30)
            }
            return v
        }
        guard let year = digits(0, 4), b[4] == UInt8(ascii: "-"), let month = digits(5, 2), b[7] == UInt8(ascii: "-"),
            let day = digits(8, 2), b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t"),
            let hour = digits(11, 2), b[13] == UInt8(ascii: ":"), let minute = digits(14, 2),
            b[16] == UInt8(ascii: ":"), let second = digits(17, 2),
            (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        var millis: Int64 = 0
        if b[19] == UInt8(ascii: ".") {
            let fraction = b[20..<(b.count - 1)]
            guard !fraction.isEmpty, fraction.count <= 9, fraction.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                return nil
            }
            for i in 0..<3 {
                millis = millis * 10 + (i < fraction.count ? Int64(fraction[20 + i] - 0x30) : 0)
            }
        } else {
            guard b.count == 20 else { return nil }
        }
        let days = daysFromCivil(year: year, month: month, day: day)
        return ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1_000 + millis
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
    static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

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
