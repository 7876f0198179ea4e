import GatewayProtocol
import ArgumentParser
import Foundation
import Glibc
import TranscriptLog

extension GatewayCtl {
    /// `gatewayctl export`: a session's transcript as JSON lines or a readable Markdown chat log.
    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Export a session's transcript from a log directory as JSON lines or Markdown.",
            discussion: """
                jsonl: one event frame per line, exactly as `tail --json` prints them. \
                markdown: a chat log for support and audit: a header (session, epoch, time range in UTC), chat \
                messages as "**sub** (role, time): text", progress steps as list items, other kinds as compact lines. \
                Markdown-significant characters in user text are escaped; control characters never appear.

                Reads the log read-only (safe while the gateway runs). With --output the file is written \
                completely or not at all (temporary file, then rename).

                Exit codes: 0 ok, 1 usage or write failure, 3 no such directory or session, 4 damaged log.

                Examples:
                  gatewayctl export demo data --format markdown --output demo.md
                  gatewayctl export demo data --format jsonl > demo.jsonl
                """)

        /// Export formats.
        enum Format: String, ExpressibleByArgument, CaseIterable {
            /// One event frame per line.
            case jsonl
            /// A readable chat log.
            case markdown
        }

        @Argument(help: "Session id.")
        var session: String

        @Argument(help: "The gateway's data directory (the transcript log).")
        var dataDir: String

        @Option(help: "jsonl or markdown.")
        var format: Format

        @Option(name: [.short, .long], help: "Write to this file instead of stdout.")
        var output: String?

        @Option(help: "Export the events after this seq (0: all held).")
        var since: UInt64 = 0

        func run() throws {
            let log = try LogDirectory.openReadOnly(dataDir, skipDamaged: false)
            defer { try? log.close() }
            guard let summary = log.summary(session: session) else {
                throw CtlError.notFound("no session \(TextEscaper.escape(session)) in \(TextEscaper.escape(dataDir))")
            }
            let destination = try Destination(path: output)
            do {
                let sink = OutputSink(fd: destination.fd)
                switch format {
                case .jsonl:
                    try LogDirectory.forEachRecord(log, session: session, since: since, path: dataDir) {
                        (record) throws(CtlError) in
                        try sink.writeLine(JSONText.singleLine(EventView(record: record).frameText()))
                    }
                case .markdown:
                    var records: [TranscriptRecord] = []
                    try LogDirectory.forEachRecord(log, session: session, since: since, path: dataDir) {
                        (record) throws(CtlError) in records.append(record)
                    }
                    let document = MarkdownTranscript(
                        session: session, epoch: log.epoch, summary: summary,
                        events: records.map(EventView.init(record:)))
                    for line in document.lines() { try sink.writeLine(line) }
                }
                try sink.flush()
                try destination.commit()
            } catch {
                destination.abandon()
                throw error
            }
        }
    }
}

/// Where an export goes: stdout, or a temporary file renamed over `path` when complete.
struct Destination {
    /// The descriptor to write to.
    let fd: Int32
    /// The final path (`nil` for stdout).
    let path: String?
    /// The temporary file.
    let temporary: String?

    /// Opens the destination.
    /// - Parameters:
    ///   - path: A file path, or `nil`/`-` for stdout.
    /// - Throws: ``CtlError`` (exit 1) if the temporary file cannot be created.
    init(path: String?) throws(CtlError) {
        guard let path, path != "-" else {
            fd = STDOUT_FILENO
            self.path = nil
            temporary = nil
            return
        }
        let temporary = path + ".tmp-\(getpid())"
        let fd = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw CtlError.usage("cannot create \(TextEscaper.escape(temporary)): \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        self.path = path
        self.temporary = temporary
    }

    /// Syncs, closes and renames the temporary file into place.
    /// - Throws: ``CtlError`` (exit 1).
    func commit() throws(CtlError) {
        guard let path, let temporary else { return }
        let synced = fsync(fd) == 0
        let closed = Glibc.close(fd) == 0
        guard synced, closed, rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw CtlError.usage("cannot write \(TextEscaper.escape(path)): \(reason)")
        }
    }

    /// Removes the temporary file after a failure.
    func abandon() {
        guard let temporary else { return }
        Glibc.close(fd)
        unlink(temporary)
    }
}

/// A session transcript as a readable Markdown chat log.
struct MarkdownTranscript {
    /// Session id.
    let session: String
    /// The log's epoch.
    let epoch: String
    /// The session's summary (head, first held).
    let summary: SessionSummary
    /// The events, in seq order.
    let events: [EventView]

    /// The document, line by line.
    func lines() -> [String] {
        var out: [String] = []
        out.append("# Session \(Markdown.escapeInline(session))")
        out.append("")
        out.append("- Epoch: \(Markdown.escapeInline(epoch))")
        let firstMs = events.first?.timestampMs
        let lastMs = events.last?.timestampMs
        if let first = events.first?.seq, let last = events.last?.seq {
            out.append("- Events: \(events.count) (seq \(first) to \(last); head \(summary.head))")
        } else {
            out.append("- Events: none held (head \(summary.head))")
        }
        if let firstMs, let lastMs {
            out.append("- Time: \(Timestamps.utcDateTime(firstMs)) to \(Timestamps.utcDateTime(lastMs))")
        }
        out.append("- Exported: \(Timestamps.utcDateTime(Timestamps.nowMs())) by gatewayctl")
        out.append("")
        let oneDay = firstMs.map(Timestamps.utcDate) == lastMs.map(Timestamps.utcDate)
        func time(_ e: EventView) -> String {
            guard let ms = e.timestampMs else { return "?" }
            return oneDay ? Timestamps.utcClock(ms) : Timestamps.utcDateTime(ms)
        }
        var inList = false
        for e in events {
            let who = "\(Markdown.escapeInline(e.role)), \(time(e))"
            let isProgress = e.kind == "progress" || e.kind.hasPrefix("progress.")
            if isProgress {
                if !inList && out.last != "" { out.append("") }
                inList = true
                out.append("- " + Markdown.escapeBlock(progressText(e)) + " (\(Markdown.escapeInline(e.sub)), \(who))")
                continue
            }
            if inList {
                out.append("")
                inList = false
            }
            if e.kind == "chat.message", let text = e.chatText() {
                out.append("**\(Markdown.escapeInline(e.sub))** (\(who)): " + Markdown.escapeBlock(text))
            } else {
                out.append(
                    "\(Markdown.escapeInline(e.kind)) from **\(Markdown.escapeInline(e.sub))** (\(who)): "
                        + Markdown.escapeInline(JSONText.compact(e.data), limit: 300))
            }
            out.append("")
        }
        while out.last == "" { out.removeLast() }
        return out
    }

    /// The label of a progress step: `data.text`/`message`/`title`/`step` (string), with "step N of M" when given.
    private func progressText(_ e: EventView) -> String {
        var parts: [String] = []
        if let step = e.integerMember("step") {
            parts.append(e.integerMember("of").map { "step \(step) of \($0)" } ?? "step \(step)")
        }
        for key in ["text", "message", "title", "step", "status"] {
            if let label = e.stringMember(key) {
                parts.append(label)
                break
            }
        }
        if parts.isEmpty { return "progress: " + TextEscaper.truncate(JSONText.compact(e.data), limit: 300) }
        return parts.joined(separator: ": ")
    }
}

/// Minimal Markdown escaping of untrusted text.
enum Markdown {
    /// Characters that start emphasis, code, links, HTML, entities or tables anywhere in a line.
    private static let inlineSpecial: Set<Character> = ["\\", "`", "*", "_", "[", "]", "<", ">", "&", "~", "|"]

    /// Escapes one line of text: control characters become visible escapes (`\x1b`), line breaks `\n`, and
    /// Markdown punctuation gets a backslash.
    /// - Parameters:
    ///   - text: Untrusted text.
    ///   - limit: Maximum characters before escaping.
    /// - Returns: Safe inline Markdown.
    static func escapeInline(_ text: String, limit: Int = 10_000) -> String {
        escapePunctuation(TextEscaper.escape(TextEscaper.truncate(text, limit: limit)))
    }

    /// Escapes multi-line text for a paragraph or list item: each line is escaped, lines that would start a block
    /// (`#`, `>`, `-`, `+`, `=`, `1.`) are neutralised, empty lines are dropped, and lines are joined with Markdown
    /// hard breaks (`\` at the end of a line) and an indent that keeps list items together.
    /// - Parameters:
    ///   - text: Untrusted text.
    /// - Returns: Safe Markdown.
    static func escapeBlock(_ text: String) -> String {
        let lines = text.split(
            omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" })
        var out: [String] = []
        for raw in lines {
            var line = escapePunctuation(TextEscaper.escape(String(raw)))
            let trimmed = line.drop(while: { $0 == " " })
            guard !trimmed.isEmpty else { continue }
            line = String(trimmed)
            if let first = line.first, "#>-+=".contains(first) {
                line = "\\" + line
            } else {
                let digits = line.prefix(while: { $0.isASCII && $0.isNumber })
                if !digits.isEmpty, let next = line.dropFirst(digits.count).first, next == "." || next == ")" {
                    line = digits + "\\" + line.dropFirst(digits.count)
                }
            }
            out.append(line)
        }
        return out.joined(separator: "\\\n  ")
    }

    private static func escapePunctuation(_ text: String) -> String {
        guard text.contains(where: { inlineSpecial.contains($0) }) else { return text }
        var out = ""
        out.reserveCapacity(text.count + 8)
        for c in text {
            if inlineSpecial.contains(c) { out.append("\\") }
            out.append(c)
        }
        return out
    }
}
