/// RFC 3339 timestamps for the event frame's `ts` field, without Foundation: formatting (the gateway) and
/// parsing (gatewayctl), in one place.
///
/// DateFormatter is slow, allocates, and is locale-sensitive; the gateway stamps every event, so the conversion is
/// done with integer arithmetic (Howard Hinnant's `civil_from_days`, public domain, valid for the proleptic Gregorian
/// calendar) and always produces exactly 24 bytes: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
public enum RFC3339 {
    /// The length of every formatted timestamp, in bytes.
    public static let length = 24
    /// The earliest instant that has a four-digit year: 0000-01-01T00:00:00.000Z, in Unix milliseconds.
    public static let minMilliseconds: Int64 = -62_167_219_200_000
    /// The latest instant that has a four-digit year: 9999-12-31T23:59:59.999Z, in Unix milliseconds.
    public static let maxMilliseconds: Int64 = 253_402_300_799_999

    /// Appends the UTC timestamp for `milliseconds` since the Unix epoch.
    ///
    /// Values outside year 0000-9999 are clamped to that range: the format has four year digits, and the gateway's
    /// clock never produces such values, so clamping is safer than emitting an invalid timestamp.
    /// - Parameters:
    ///   - milliseconds: Milliseconds since 1970-01-01T00:00:00Z.
    ///   - buffer: The buffer to append the 24 bytes to.
    public static func append(milliseconds: Int64, to buffer: inout [UInt8]) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: length) { out in
            guard let base = out.baseAddress else { return }
            write(milliseconds: milliseconds, to: base)
            buffer.append(contentsOf: UnsafeBufferPointer(out))
        }
    }

    /// Writes exactly ``length`` bytes for `milliseconds` at `out`.
    static func write(milliseconds: Int64, to out: UnsafeMutablePointer<UInt8>) {
        let ms = min(max(milliseconds, minMilliseconds), maxMilliseconds)
        // Floor division, so instants before 1970 land on the previous day with a positive time of day.
        var days = ms / 86_400_000
        var msOfDay = ms % 86_400_000
        if msOfDay < 0 {
            msOfDay += 86_400_000
            days -= 1
        }
        let (year, month, day) = civilFromDays(days)
        let secondsOfDay = Int(msOfDay / 1000)
        let millis = Int(msOfDay % 1000)
        let hour = secondsOfDay / 3600
        let minute = (secondsOfDay % 3600) / 60
        let second = secondsOfDay % 60

        @inline(__always) func put(_ value: Int, _ digits: Int, at offset: Int) {
            var v = value
            var i = offset + digits
            while i > offset {
                i -= 1
                out[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: v % 10)
                v /= 10
            }
        }
        put(Int(year), 4, at: 0)
        out[4] = UInt8(ascii: "-")
        put(month, 2, at: 5)
        out[7] = UInt8(ascii: "-")
        put(day, 2, at: 8)
        out[10] = UInt8(ascii: "T")
        put(hour, 2, at: 11)
        out[13] = UInt8(ascii: ":")
        put(minute, 2, at: 14)
        out[16] = UInt8(ascii: ":")
        put(second, 2, at: 17)
        out[19] = UInt8(ascii: ".")
        put(millis, 3, at: 20)
        out[23] = UInt8(ascii: "Z")
    }

    /// Formats `milliseconds` since the Unix epoch as an RFC 3339 UTC string with milliseconds.
    /// - Parameter milliseconds: Milliseconds since 1970-01-01T00:00:00Z (clamped to years 0000-9999).
    /// - Returns: For example `2026-11-25T14:09:22.123Z`.
    public static func format(milliseconds: Int64) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(length)
        append(milliseconds: milliseconds, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Converts days since 1970-01-01 to a (year, month, day) civil date.
    ///
    /// Hinnant's algorithm: shift the year to start on March 1 so the leap day is the last day of the "year", split
    /// into 400-year eras (146,097 days each), then recover year-of-era, day-of-year and month with exact integer
    /// formulas. All intermediate values are small for the clamped input range, so nothing can overflow.
    static func civilFromDays(_ daysSinceEpoch: Int64) -> (year: Int64, month: Int, day: Int) {
        let z = daysSinceEpoch + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097  // [0, 146096]
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365  // [0, 399]
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)  // [0, 365]
        let mp = (5 * doy + 2) / 153  // [0, 11], March-based month
        let day = Int(doy - (153 * mp + 2) / 5 + 1)  // [1, 31]
        let month = Int(mp < 10 ? mp + 3 : mp - 9)  // [1, 12]
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }

    /// Parses the gateway's `ts` (`YYYY-MM-DDTHH:MM:SS[.fff]Z`) into Unix milliseconds.
    /// - Parameters:
    ///   - text: The timestamp text (untrusted).
    /// - Returns: Milliseconds, or `nil` if the text is not in that form.
    public static func parse(_ text: String) -> Int64? {
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
}
