import GatewayProtocol
import Testing

@Suite("RFC 3339 timestamps")
struct RFC3339Tests {
    @Test(
        "formats known instants",
        arguments: [
            (Int64(0), "1970-01-01T00:00:00.000Z"),
            (1, "1970-01-01T00:00:00.001Z"),
            (86_399_999, "1970-01-01T23:59:59.999Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),  // leap year divisible by 400
            (1_709_210_096_789, "2024-02-29T12:34:56.789Z"),
            (1_795_615_762_123, "2026-11-25T14:09:22.123Z"),
            (1_798_761_599_999, "2026-12-31T23:59:59.999Z"),  // end of year
            (1_798_761_600_000, "2027-01-01T00:00:00.000Z"),
            (946_684_799_999, "1999-12-31T23:59:59.999Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),  // 2100 is not a leap year: Feb 28 is followed by Mar 1
            (2_147_483_648_000, "2038-01-19T03:14:08.000Z"),  // past the 32-bit time_t limit
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
        ]
    )
    func knownInstants(_ ms: Int64, _ expected: String) {
        #expect(RFC3339.format(milliseconds: ms) == expected)
    }

    @Test("clamps instants outside years 0000-9999 instead of trapping")
    func clamps() {
        #expect(RFC3339.format(milliseconds: .max) == "9999-12-31T23:59:59.999Z")
        #expect(RFC3339.format(milliseconds: 253_402_300_800_000) == "9999-12-31T23:59:59.999Z")
        #expect(RFC3339.format(milliseconds: .min) == "0000-01-01T00:00:00.000Z")
    }

    @Test("matches a day-by-day calendar walk: every month boundary from 1970 to 9999, plus a day sample")
    func everyDay() {
        // An independent, obviously-correct reference: step through the calendar one day at a time.
        func isLeap(_ y: Int) -> Bool { (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 }
        let monthDays = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        var year = 1970
        var month = 1
        var day = 1
        var days: Int64 = 0
        var mismatches = 0
        var buffer: [UInt8] = []
        buffer.reserveCapacity(RFC3339.length)
        func digits(_ range: Range<Int>) -> Int { buffer[range].reduce(0) { $0 * 10 + Int($1) - 48 } }
        while year <= 9999 {
            // Formatting every one of the 2.9M days takes seconds in a debug build; the first and last day of every
            // month (where month, year and leap-day arithmetic can go wrong) plus every 97th day cover the same logic.
            let monthLength = month == 2 && isLeap(year) ? 29 : monthDays[month - 1]
            if day == 1 || day == monthLength || days % 97 == 0 {
                buffer.removeAll(keepingCapacity: true)
                // Noon plus a millisecond offset that varies, so time-of-day digits are exercised too.
                let millis = Int(days % 1000)
                RFC3339.append(milliseconds: days * 86_400_000 + 43_200_000 + Int64(millis), to: &buffer)
                if buffer.count != 24 || digits(0..<4) != year || digits(5..<7) != month || digits(8..<10) != day
                    || digits(20..<23) != millis || buffer[4] != 45 || buffer[7] != 45
                {
                    mismatches += 1
                    if mismatches < 5 { Issue.record("day \(days): \(String(decoding: buffer, as: UTF8.self))") }
                }
            }
            days += 1
            day += 1
            if day > monthLength {
                day = 1
                month += 1
                if month > 12 {
                    month = 1
                    year += 1
                }
            }
        }
        #expect(mismatches == 0)
        #expect(days == 2_932_897)  // days from 1970-01-01 to 10000-01-01
    }

    @Test("time of day digits", arguments: [(Int64(3_723_004), "01:02:03.004"), (45_296_789, "12:34:56.789"), (86_399_999, "23:59:59.999")])
    func timeOfDay(_ ms: Int64, _ expected: String) {
        #expect(RFC3339.format(milliseconds: ms + 19_000 * 86_400_000).dropFirst(11).dropLast() == expected[...])
    }

    @Test("parse is the inverse of format", arguments: [Int64(0), 1_700_000_000_123, -1, RFC3339.minMilliseconds, RFC3339.maxMilliseconds])
    func parseRoundTrip(_ ms: Int64) {
        #expect(RFC3339.parse(RFC3339.format(milliseconds: ms)) == ms)
    }

    @Test("parse accepts whole seconds and long fractions, refuses other text",
          arguments: [("2024-02-29T23:59:59Z", Int64(1_709_251_199_000)), ("2024-02-29T23:59:59.123456789Z", 1_709_251_199_123)])
    func parseForms(_ text: String, _ expected: Int64) {
        #expect(RFC3339.parse(text) == expected)
    }

    @Test("parse refuses malformed text", arguments: ["", "2024-02-29", "2024-13-01T00:00:00Z", "2024-02-29T24:00:00Z", "2024-02-29T23:59:59.Z", "2024-02-29 23:59:59+01:00"])
    func parseRefuses(_ text: String) {
        #expect(RFC3339.parse(text) == nil)
    }
}
