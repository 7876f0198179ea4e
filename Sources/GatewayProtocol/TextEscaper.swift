// Everything the gateway logs and the CLI prints that came from a client, a token or the log goes through here: a
// user can put an ANSI escape, a carriage return or a right-to-left override into a chat message or a token's `sub`,
// and none of it may reach a log line or an operator's terminal raw (it could hide text, move the cursor, retitle
// the window or fake a line). One escaper for both, so a log viewer and `gatewayctl` show the same text.

/// Renders untrusted text for a terminal: control and invisible formatting characters become visible escapes.
public enum TextEscaper {
    /// Escapes `text` for display on one line.
    ///
    /// `\n`, `\r`, `\t` become `\n`, `\r`, `\t`; other C0 controls, DEL and C1 controls become `\xHH` (so ESC shows
    /// as `\x1b`); format characters (bidi overrides, zero-width characters, BOM) and the Unicode line/paragraph
    /// separators become `\u{HHHH}`. Everything else is kept.
    /// - Parameters:
    ///   - text: Untrusted text.
    /// - Returns: Text without any control or format character.
    public static func escape(_ text: String) -> String {
        // Fast path: printable ASCII needs nothing.
        if text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) { return text }
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars { appendEscaped(scalar, to: &out) }
        return String(out)
    }

    /// Whether `scalar` must not be printed raw.
    /// - Parameters:
    ///   - scalar: A Unicode scalar.
    /// - Returns: `true` for controls, format characters and line/paragraph separators.
    public static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        let v = scalar.value
        if v >= 0x20 && v < 0x7F { return false }
        if v < 0x20 || (0x7F...0x9F).contains(v) { return true }
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator: return true
        default: return false
        }
    }

    /// Appends the escaped form of one scalar.
    /// - Parameters:
    ///   - scalar: The scalar.
    ///   - out: The output.
    public static func appendEscaped(_ scalar: Unicode.Scalar, to out: inout String.UnicodeScalarView) {
        guard needsEscape(scalar) else {
            out.append(scalar)
            return
        }
        let text: String
        switch scalar.value {
        case 0x0A: text = "\\n"
        case 0x0D: text = "\\r"
        case 0x09: text = "\\t"
        case 0..<0x100: text = "\\x" + hex(scalar.value, width: 2)
        default: text = "\\u{" + hex(scalar.value, width: 4) + "}"
        }
        out.append(contentsOf: text.unicodeScalars)
    }

    /// Lowercase hex, zero-padded to `width`.
    public static func hex(_ value: UInt32, width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }

    /// Escapes and shortens `text` to at most `limit` characters, ending in `…` when cut.
    /// - Parameters:
    ///   - text: Untrusted text.
    ///   - limit: Maximum characters of the result (at least 1).
    /// - Returns: Escaped, possibly truncated text.
    public static func escape(_ text: String, limit: Int) -> String {
        truncate(escape(text), limit: limit)
    }

    /// Shortens already safe text to at most `limit` characters, ending in `…` when cut.
    /// - Parameters:
    ///   - text: Safe text.
    ///   - limit: Maximum characters (at least 1).
    /// - Returns: The text, or its prefix plus `…`.
    public static func truncate(_ text: String, limit: Int) -> String {
        let limit = max(1, limit)
        guard text.count > limit else { return text }
        return String(text.prefix(limit - 1)) + "…"
    }
}

