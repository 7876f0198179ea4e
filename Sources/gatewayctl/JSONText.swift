import GatewayProtocol

/// Byte-level helpers for JSON text received from the gateway or read from the log.
enum JSONText {
    /// Makes one JSON text safe to print as exactly one line, without changing what it means.
    ///
    /// Outside strings, CR, LF and TAB can only be insignificant whitespace (the gateway keeps `data` byte-exact, so
    /// a client's pretty-printed payload arrives with newlines) and become spaces. Inside strings, raw DEL, C1
    /// controls and format characters are legal JSON but dangerous on a terminal; they become `\uXXXX` escapes,
    /// which decode to the same string. Raw C0 controls inside a string would be invalid JSON; they are escaped too.
    /// - Parameters:
    ///   - text: JSON text.
    /// - Returns: The same JSON value on one line with no control or format character.
    static func singleLine(_ text: String) -> String {
        var needsWork = false
        for byte in text.utf8 where byte < 0x20 || byte >= 0x7F {
            needsWork = true
            break
        }
        guard needsWork else { return text }
        var out = String.UnicodeScalarView()
        var inString = false
        var escaped = false
        for scalar in text.unicodeScalars {
            if inString {
                if escaped {
                    escaped = false
                } else if scalar == "\\" {
                    escaped = true
                } else if scalar == "\"" {
                    inString = false
                }
                if TextEscaper.needsEscape(scalar) {
                    appendUnicodeEscape(scalar, to: &out)
                    continue
                }
                out.append(scalar)
            } else {
                if scalar == "\"" { inString = true }
                if scalar == "\n" || scalar == "\r" || scalar == "\t" {
                    out.append(" ")
                } else if TextEscaper.needsEscape(scalar) {
                    // Not valid JSON outside a string; show it escaped rather than raw.
                    TextEscaper.appendEscaped(scalar, to: &out)
                } else {
                    out.append(scalar)
                }
            }
        }
        return String(out)
    }

    /// Appends `\uXXXX` (a surrogate pair above the BMP).
    private static func appendUnicodeEscape(_ scalar: Unicode.Scalar, to out: inout String.UnicodeScalarView) {
        func unit(_ u: UInt32) {
            out.append(contentsOf: ("\\u" + TextEscaper.hex(u, width: 4)).unicodeScalars)
        }
        let v = scalar.value
        if v < 0x10000 {
            unit(v)
        } else {
            let w = v - 0x10000
            unit(0xD800 + (w >> 10))
            unit(0xDC00 + (w & 0x3FF))
        }
    }

    /// The JSON text without insignificant whitespace (strings untouched), as a `String` (lossy UTF-8).
    /// - Parameters:
    ///   - bytes: One JSON value.
    /// - Returns: Compact text, still possibly containing escapes-worthy characters inside strings.
    static func compact(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var inString = false
        var escaped = false
        for byte in bytes {
            if inString {
                out.append(byte)
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
            } else {
                switch byte {
                case 0x20, 0x09, 0x0A, 0x0D: continue
                case UInt8(ascii: "\""):
                    inString = true
                    out.append(byte)
                default: out.append(byte)
                }
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A compact, escaped, truncated one-line summary of a JSON value for human output.
    /// - Parameters:
    ///   - bytes: One JSON value.
    ///   - limit: Maximum characters.
    /// - Returns: Safe text.
    static func summary(_ bytes: [UInt8], limit: Int) -> String {
        // Only the first bytes can show; do not compact a megabyte to print 160 characters.
        let cut = bytes.count > limit * 8
        let text = TextEscaper.escape(compact(cut ? Array(bytes.prefix(limit * 8)) : bytes))
        if cut && text.count < limit { return text + "…" }
        return TextEscaper.truncate(text, limit: limit)
    }
}
