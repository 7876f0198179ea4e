import GatewayProtocol

/// Makes untrusted text safe for a log line: the one escaper of the gateway and `gatewayctl`
/// (``TextEscaper``: C0/C1 controls, DEL, format characters such as bidi overrides and zero-width characters, and
/// line/paragraph separators become visible escapes), bounded length.
enum LogSafe {
    /// Escapes `s` and shortens it to at most `max` characters (ending in `…` when cut).
    static func escape(_ s: String, max: Int = 200) -> String {
        TextEscaper.escape(s, limit: max)
    }
}
