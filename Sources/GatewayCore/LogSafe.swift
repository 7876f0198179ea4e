/// Makes untrusted text safe for a log line: control characters and non-ASCII escapes, bounded length.
enum LogSafe {
    static func escape(_ s: String, max: Int = 200) -> String {
        var out = ""
        for scalar in s.unicodeScalars.prefix(max) {
            if scalar.value < 0x20 || scalar.value == 0x7f || (scalar.value >= 0x80 && scalar.value < 0xa0) {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
