import GatewayProtocol
import Testing

/// The one escaper for log lines and terminals (reliability.md: "Release-only memory safety" and "one escaper").
@Suite("Text escaper")
struct TextEscaperTests {
    @Test func controlsFormatCharactersAndSeparatorsBecomeVisible() {
        #expect(TextEscaper.escape("plain text") == "plain text")
        #expect(TextEscaper.escape("a\nb\rc\td") == #"a\nb\rc\td"#)
        #expect(TextEscaper.escape("\u{1b}[2J\u{07}\u{7f}\u{85}") == #"\x1b[2J\x07\x7f\x85"#)
        // Bidi overrides, zero-width characters, the BOM and the Unicode line/paragraph separators.
        #expect(TextEscaper.escape("abc\u{202e}fed") == #"abc\u{202e}fed"#)
        #expect(TextEscaper.escape("\u{200b}\u{2066}\u{feff}\u{2028}\u{2029}") == #"\u{200b}\u{2066}\u{feff}\u{2028}\u{2029}"#)
        // Printable non-ASCII stays.
        #expect(TextEscaper.escape("héllo 世界 🙂") == "héllo 世界 🙂")
    }

    @Test func limitCutsWithAnEllipsis() {
        #expect(TextEscaper.escape(String(repeating: "x", count: 10), limit: 5) == "xxxx…")
        #expect(TextEscaper.escape("\u{1b}\u{1b}", limit: 3) == #"\x…"#)
        #expect(TextEscaper.escape("short", limit: 5) == "short")
    }
}
