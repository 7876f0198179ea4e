import ArgumentParser
import Foundation
import GatewayProtocol
import TranscriptLog

extension GatewayCtl {
    /// `gatewayctl log`: offline access to a transcript log directory.
    struct Log: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read, verify and repair a transcript log directory directly (no gateway needed).",
            discussion: """
                cat, sessions and verify open the log read-only without its lock: they work while the gateway is \
                stopped and, read-only, while it runs (a tail being written is simply where reading stops). \
                repair changes files, needs the gateway stopped and asks for --yes.
                """,
            subcommands: [Cat.self, Sessions.self, Verify.self, Repair.self])
    }
}

/// Opening a log directory for the offline commands, with failures mapped to exit codes.
enum LogDirectory {
    /// Checks that `path` is a directory holding transcript segments.
    /// - Parameters:
    ///   - path: DATA_DIR.
    /// - Throws: ``CtlError`` (exit 3) if it is missing or holds no segment.
    static func check(_ path: String) throws(CtlError) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CtlError.notFound("no such directory: \(TextEscaper.escape(path))")
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        guard names.contains(where: { $0.hasSuffix(".tlog") }) else {
            throw CtlError.notFound("\(TextEscaper.escape(path)) holds no transcript segments (*.tlog)")
        }
    }

    /// Opens the log read-only (no lock, nothing modified).
    /// - Parameters:
    ///   - path: DATA_DIR.
    ///   - skipDamaged: Skip damaged regions instead of failing.
    /// - Returns: The log.
    /// - Throws: ``CtlError``: 3 if missing, 4 on damage, 1 on another I/O error.
    static func openReadOnly(_ path: String, skipDamaged: Bool) throws(CtlError) -> TranscriptLog {
        try check(path)
        var options = TranscriptLogOptions(directory: path)
        options.skipDamagedRecords = skipDamaged
        do {
            return try TranscriptLog.openReadOnly(options)
        } catch {
            throw failure(error, path: path)
        }
    }

    /// Maps a log error to the operator's message and exit code.
    static func failure(_ error: TranscriptError, path: String) -> CtlError {
        switch error.code {
        case .corrupted:
            return CtlError.damage(
                "the log is damaged at \(TextEscaper.escape(error.segment)) offset \(error.offset): "
                    + "\(TextEscaper.escape(error.reason)) (see `gatewayctl log verify \(TextEscaper.escape(path))`)")
        case .locked:
            return CtlError.usage(
                "\(TextEscaper.escape(path)) is locked by a running gateway (or another writer): stop it first")
        default:
            return CtlError.usage(
                "cannot read the log in \(TextEscaper.escape(path)): \(TextEscaper.escape("\(error)"))")
        }
    }

    /// Reads every event of `session` after `since`, in order, in bounded chunks.
    /// - Parameters:
    ///   - log: The log.
    ///   - session: Session id.
    ///   - since: Start after this seq.
    ///   - body: Called for each record.
    /// - Throws: ``CtlError`` (exit 3 for an unknown session, 4 for damage).
    static func forEachRecord(
        _ log: TranscriptLog, session: String, since: UInt64, path: String,
        _ body: (TranscriptRecord) throws(CtlError) -> Void
    ) throws(CtlError) {
        guard let summary = log.summary(session: session) else {
            throw CtlError.notFound("no session \(TextEscaper.escape(session)) in \(TextEscaper.escape(path))")
        }
        var after = since
        while after < summary.head {
            let result: ReadResult
            do {
                result = try log.read(session: session, after: after, limit: 1_024, maxBytes: 4 << 20)
            } catch {
                throw failure(error, path: path)
            }
            guard let lastRecord = result.records.last else { break }
            for record in result.records where record.seq <= summary.head { try body(record) }
            after = lastRecord.seq
        }
    }
}

extension GatewayCtl.Log {
    /// `gatewayctl log cat`: print a session's stored events.
    struct Cat: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a session's stored events from a log directory.",
            discussion: """
                Same line format as `tail` (times in the local time zone); --json prints each event as the event \
                frame the gateway would send, one per line.

                Exit codes: 0 ok, 1 usage or unreadable files, 3 no such directory or session, 4 damaged log.

                Examples:
                  gatewayctl log cat data --session demo
                  gatewayctl log cat data --session demo --since 120 --json | jq .data
                """)

        @Argument(help: "The gateway's data directory (the transcript log).")
        var dataDir: String

        @Option(help: "Session id.")
        var session: String

        @Option(help: "Print the events after this seq (0: all held).")
        var since: UInt64 = 0

        @Flag(help: "One event frame per line (JSON).")
        var json = false

        @Option(help: "Colour: auto (when stdout is a terminal), always, never.")
        var color: ColorMode = .auto

        @Flag(name: .customLong("skip-damaged"), help: "Skip damaged regions instead of failing (exit 0).")
        var skipDamaged = false

        func run() throws {
            let output = OutputSink()
            let formatter = EventFormatter(
                color: color.enabled(for: output, environment: ProcessInfo.processInfo.environment))
            let log = try LogDirectory.openReadOnly(dataDir, skipDamaged: skipDamaged)
            defer { try? log.close() }
            let now = Timestamps.nowMs()
            try LogDirectory.forEachRecord(log, session: session, since: since, path: dataDir) {
                (record) throws(CtlError) in
                let event = EventView(record: record)
                try output.writeLine(json ? JSONText.singleLine(event.frameText()) : formatter.line(event, nowMs: now))
            }
            try output.flush()
        }
    }

    /// `gatewayctl log sessions`: the sessions a log holds.
    struct Sessions: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the sessions in a log directory: head, oldest held seq, last event time.",
            discussion: """
                Examples:
                  gatewayctl log sessions data
                  gatewayctl log sessions data --json
                """)

        @Argument(help: "The gateway's data directory (the transcript log).")
        var dataDir: String

        @Flag(help: "One JSON object per session and line.")
        var json = false

        func run() throws {
            let output = OutputSink()
            let log = try LogDirectory.openReadOnly(dataDir, skipDamaged: false)
            defer { try? log.close() }
            let sessions = log.sessions()
            if json {
                for s in sessions {
                    var line: [UInt8] = Array(#"{"session":"#.utf8)
                    JSONWriter.appendString(s.session, to: &line)
                    line += Array(#","head":\#(s.head),"first_held":\#(s.firstHeld),"last_event_ts":"#.utf8)
                    JSONWriter.appendString(RFC3339.format(milliseconds: s.lastTimestampMs), to: &line)
                    line.append(UInt8(ascii: "}"))
                    try output.writeLine(JSONText.singleLine(String(decoding: line, as: UTF8.self)))
                }
                return try output.flush()
            }
            var rows: [[String]] = [["SESSION", "HEAD", "FIRST HELD", "LAST EVENT"]]
            for s in sessions {
                rows.append([
                    TextEscaper.escape(s.session, limit: 128), "\(s.head)",
                    s.firstHeld > s.head ? "-" : "\(s.firstHeld)", Timestamps.localDateTime(s.lastTimestampMs),
                ])
            }
            for line in Table.render(rows, rightAligned: [1, 2]) { try output.writeLine(line) }
            try output.writeLine("\(sessions.count) session(s); epoch \(TextEscaper.escape(log.epoch))")
            try output.flush()
        }
    }

    /// `gatewayctl log verify`: check every record.
    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check every record of a log directory; print each damaged region (segment, offset).",
            discussion: """
                Read-only and lock-free: safe while the gateway runs. A torn tail at the end of the last segment \
                (a write cut short by a crash, or one in progress) is reported but is not damage.

                Exit codes: 0 sound, 3 no such directory, 4 damage found (each region on its own DAMAGE line).

                Examples:
                  gatewayctl log verify data
                  gatewayctl log verify data --json
                """)

        @Argument(help: "The gateway's data directory (the transcript log).")
        var dataDir: String

        @Flag(help: "Print the report as one JSON object.")
        var json = false

        func run() throws {
            try LogDirectory.check(dataDir)
            let output = OutputSink()
            let report: VerifyReport
            do {
                report = try TranscriptLog.verify(directory: dataDir)
            } catch {
                throw LogDirectory.failure(error, path: dataDir)
            }
            let r = report.recovery
            if json {
                var out: [UInt8] = Array(#"{"epoch":"#.utf8)
                JSONWriter.appendString(report.epoch, to: &out)
                out += Array(#","segments":\#(r.segmentsScanned),"records":\#(r.recordsScanned)"#.utf8)
                out += Array(#","sessions":\#(report.sessions.count),"torn_tail_bytes":\#(r.truncatedBytes)"#.utf8)
                out += Array(#","damage":["#.utf8)
                for (i, d) in report.damage.enumerated() {
                    if i > 0 { out.append(UInt8(ascii: ",")) }
                    out += Array(#"{"segment":"#.utf8)
                    JSONWriter.appendString(d.segment, to: &out)
                    out += Array(#","offset":\#(d.offset),"length":\#(d.length),"reason":"#.utf8)
                    JSONWriter.appendString(d.reason, to: &out)
                    out.append(UInt8(ascii: "}"))
                }
                out += Array("]}".utf8)
                try output.writeLine(JSONText.singleLine(String(decoding: out, as: UTF8.self)))
            } else {
                try output.writeLine(
                    "epoch \(TextEscaper.escape(report.epoch)): \(r.segmentsScanned) segment(s), "
                        + "\(r.recordsScanned) record(s), \(report.sessions.count) session(s)")
                if r.truncatedBytes > 0 {
                    try output.writeLine(
                        "torn tail: \(r.truncatedBytes) byte(s) at the end of the last segment (an unfinished write, not damage)"
                    )
                }
                for d in report.damage {
                    try output.writeLine(
                        "DAMAGE segment \(TextEscaper.escape(d.segment)) offset \(d.offset) length \(d.length): "
                            + TextEscaper.escape(d.reason))
                }
                if report.damage.isEmpty {
                    try output.writeLine("ok: no damage")
                } else {
                    try output.writeLine(
                        "\(report.damage.count) damaged region(s); with the gateway stopped, "
                            + "`gatewayctl log repair \(TextEscaper.escape(dataDir)) --yes` keeps the valid prefix")
                }
            }
            try output.flush()
            if !report.damage.isEmpty {
                throw CtlError(.damage, "\(report.damage.count) damaged region(s) in \(TextEscaper.escape(dataDir))")
            }
        }
    }

    /// `gatewayctl log repair`: keep the valid prefix of a damaged log.
    struct Repair: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Cut a damaged log back to its valid prefix and give it a new epoch (gateway stopped; needs --yes).",
            discussion: """
                Everything from the first damaged byte on is dropped: the rest of that segment and every later \
                segment. Clients that resume after a repair get `reset` (the epoch changed) and rebuild. Without \
                mid-log damage nothing changes and the epoch stays. Takes the log's lock: fails while the gateway runs.

                Exit codes: 0 repaired or nothing to do, 1 without --yes or while locked, 3 no such directory.

                Examples:
                  gatewayctl log verify data || gatewayctl log repair data --yes
                """)

        @Argument(help: "The gateway's data directory (the transcript log).")
        var dataDir: String

        @Flag(help: "Really repair (drops data after the first damage).")
        var yes = false

        func run() throws {
            try LogDirectory.check(dataDir)
            let output = OutputSink()
            guard yes else {
                if let report = try? TranscriptLog.verify(directory: dataDir), let first = report.damage.first {
                    try output.writeLine(
                        "would cut at segment \(TextEscaper.escape(first.segment)) offset \(first.offset) "
                            + "(\(report.damage.count) damaged region(s)) and set a new epoch")
                    try output.flush()
                }
                throw CtlError.usage("refusing to repair without --yes (it drops everything after the first damage)")
            }
            let result: RepairReport
            do {
                result = try TranscriptLog.repair(directory: dataDir)
            } catch {
                throw LogDirectory.failure(error, path: dataDir)
            }
            guard result.repaired else {
                try output.writeLine("no mid-log damage: nothing changed; epoch \(TextEscaper.escape(result.newEpoch))")
                return try output.flush()
            }
            try output.writeLine(
                "kept everything before segment \(TextEscaper.escape(result.cutSegment)) offset \(result.cutOffset)")
            try output.writeLine(
                "dropped \(result.bytesDropped) byte(s); deleted \(result.segmentsDeleted) later segment(s)")
            if let after = try? TranscriptLog.verify(directory: dataDir) {
                try output.writeLine(
                    "kept \(after.recovery.recordsScanned) record(s) in \(after.sessions.count) session(s)")
                for s in after.sessions.prefix(50) {
                    try output.writeLine("  \(TextEscaper.escape(s.session, limit: 128)): head \(s.head)")
                }
                if after.sessions.count > 50 { try output.writeLine("  … and \(after.sessions.count - 50) more") }
            }
            try output.writeLine(
                "epoch \(TextEscaper.escape(result.oldEpoch)) -> \(TextEscaper.escape(result.newEpoch))")
            try output.flush()
        }
    }
}
