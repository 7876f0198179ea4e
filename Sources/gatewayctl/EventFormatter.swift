import GatewayProtocol
import ArgumentParser
import Glibc

/// When to colour human output.
enum ColorMode: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// Colour when stdout is a terminal, `NO_COLOR` is unset and `TERM` is not `dumb`.
    case auto
    /// Always colour.
    case always
    /// Never colour.
    case never

    /// Whether to colour output written to `sink`.
    /// - Parameters:
    ///   - sink: The output.
    ///   - environment: The process environment.
    /// - Returns: The decision.
    func enabled(for sink: OutputSink, environment: [String: String]) -> Bool {
        switch self {
        case .always: return true
        case .never: return false
        case .auto:
            if let noColor = environment["NO_COLOR"], !noColor.isEmpty { return false }
            if environment["TERM"] == "dumb" { return false }
            return sink.isTerminal
        }
    }
}

/// Matches event kinds against `--kind` patterns: exact (`chat.message`) or prefix (`chat.*`, `progress*`).
struct KindFilter: Sendable {
    /// The patterns; empty matches everything.
    let patterns: [String]

    /// Whether `kind` is selected.
    /// - Parameters:
    ///   - kind: An event kind.
    /// - Returns: `true` if no pattern was given or one matches.
    func matches(_ kind: String) -> Bool {
        guard !patterns.isEmpty else { return true }
        for pattern in patterns {
            if pattern.hasSuffix("*") {
                if kind.hasPrefix(pattern.dropLast()) { return true }
            } else if kind == pattern {
                return true
            }
        }
        return false
    }
}

/// Renders events as one human-readable line each:
/// `TIME  #SEQ  ROLE/SUB  KIND  TEXT` where TEXT is `data.text` when it is a string, else compact JSON.
///
/// Every field that came from outside is escaped (``TextEscaper``); ANSI colour codes are added only by this type,
/// and only when `color` is on. Ephemeral events show `~` instead of a seq and are dimmed.
struct EventFormatter: Sendable {
    /// Whether to add ANSI colours.
    var color: Bool
    /// Longest text shown for `data` (characters).
    var dataLimit = 200

    private static let reset = "\u{1B}[0m"
    private static let dim = "\u{1B}[2m"
    private static let bold = "\u{1B}[1m"
    private static let yellow = "\u{1B}[33m"

    /// One line for `event` (no newline).
    /// - Parameters:
    ///   - event: The event.
    ///   - nowMs: The current time (decides whether the date is shown).
    /// - Returns: The line.
    func line(_ event: EventView, nowMs: Int64) -> String {
        let time =
            event.timestampMs.map { Timestamps.eventTime($0, nowMs: nowMs) }
            ?? TextEscaper.escape(event.timestampText, limit: 40)
        let seq = event.seq.map { "#\($0)" } ?? "~"
        let who = TextEscaper.escape(event.role, limit: 16) + "/" + TextEscaper.escape(event.sub, limit: 64)
        let kind = TextEscaper.escape(event.kind, limit: 64)
        let text: String
        if let chat = event.chatText() {
            text = TextEscaper.escape(chat, limit: max(dataLimit, 2_000))
        } else {
            text = JSONText.summary(event.data, limit: dataLimit)
        }
        guard color else { return "\(time)  \(seq)  \(who)  \(kind)  \(text)" }
        if event.isEphemeral {
            return Self.dim + "\(time)  \(seq)  \(who)  \(kind)  \(text)" + Self.reset
        }
        return Self.dim + time + Self.reset + "  " + Self.yellow + seq + Self.reset + "  "
            + Self.roleColor(event.role) + who + Self.reset + "  " + Self.bold + kind + Self.reset + "  " + text
    }

    private static func roleColor(_ role: String) -> String {
        switch role {
        case "user": return "\u{1B}[36m"
        case "agent": return "\u{1B}[32m"
        case "operator": return "\u{1B}[35m"
        default: return ""
        }
    }
}
