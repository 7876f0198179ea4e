// libFuzzer target: the transcript log reader (recovery scan, verify, read-only open and reads, writable open with
// torn-tail truncation, repair) on arbitrary segment files.
//
// The input is the content of the log's segment files: it is cut before every later occurrence of the segment
// magic "SKTRLOG\n" (at most 4 pieces), and each piece is written as a segment file (docs/transcript-format.md
// names) numbered after its header's segment_number when that is 1...64 and unused, else after its position. So
// seeds made of real segments back to back give multi-segment logs (with gaps, as after retention), and mutations
// can move bytes across them.
//
// Properties (a violation traps; ASan catches out-of-bounds access; `-malloc_limit_mb` in scripts/fuzz.sh catches
// an allocation sized from an unchecked length):
//   1. Nothing traps. Every failure is a thrown TranscriptError.
//   2. Reads return each session's records in strictly increasing seq order, no seq above the head, only records
//      of the session asked for, and every id/kind/sub/role as stored (the CRC covers them).
//   3. verify reports no damage => openReadOnly succeeds and agrees on the sessions and heads.
//   4. openReadOnly succeeds => a writable open succeeds (it only truncates a torn tail), an append gets
//      head + 1, and afterwards verify reports no damage and the appended event reads back.
//   5. A writable open that refuses mid-log damage => repair makes the log openable, verify finds no damage.
import FuzzDriver
import TranscriptLog

#if canImport(Glibc)
    import Glibc
#endif

@inline(never)
func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition {
        let text = Array("fuzz-log-reader: property violated: \(message())\n".utf8)
        _ = text.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        abort()
    }
}

/// One scratch directory per process, on tmpfs when there is one (no disk I/O per execution).
let scratch: String = {
    let base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    var template = Array("\(base)/fuzz-log-reader-XXXXXX".utf8CString)
    guard let p = mkdtemp(&template) else {
        perror("mkdtemp")
        exit(1)
    }
    let dir = String(cString: p)
    atexit {
        // Best effort: the directory holds only the last input's segments.
        if let d = opendir(scratchPath) {
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { unlink(scratchPath + "/" + name) }
            }
            closedir(d)
        }
        rmdir(scratchPath)
    }
    return dir
}()
nonisolated(unsafe) var scratchPath = ""

let magic: [UInt8] = Array("SKTRLOG\n".utf8)

func clearScratch() {
    guard let d = opendir(scratch) else { return }
    var names: [String] = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    closedir(d)
    for n in names { unlink(scratch + "/" + n) }
}

func writeFile(_ path: String, _ bytes: UnsafeRawBufferPointer) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    check(fd >= 0, "cannot create \(path): errno \(errno)")
    var done = 0
    while done < bytes.count {
        let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
        check(n > 0, "write \(path): errno \(errno)")
        done += n
    }
    close(fd)
}

/// Cut points: offset 0 and every later start of the segment magic, at most 4 pieces.
func pieces(_ bytes: UnsafeRawBufferPointer) -> [Range<Int>] {
    var starts = [0]
    var i = 1
    while i + magic.count <= bytes.count && starts.count < 4 {
        if bytes[i] == magic[0] && bytes[i + 1] == magic[1] && magic.indices.allSatisfy({ bytes[i + $0] == magic[$0] }) {
            starts.append(i)
            i += magic.count
        } else {
            i += 1
        }
    }
    return starts.indices.map { k in starts[k]..<(k + 1 < starts.count ? starts[k + 1] : bytes.count) }
}

func segmentName(_ n: Int) -> String {
    let hex = String(n, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex + ".tlog"
}

/// Reads every session to its head in small pages and checks property 2. Returns heads by session.
func readAll(_ log: TranscriptLog) -> [String: UInt64] {
    var heads: [String: UInt64] = [:]
    for s in log.sessions() {
        heads[s.session] = s.head
        check(s.firstHeld >= 1, "firstHeld 0")
        var after: UInt64 = 0
        var pages = 0
        while pages < 64 {
            pages += 1
            let r: ReadResult
            do { r = try log.read(session: s.session, after: after, limit: 7, maxBytes: 4096) } catch { return heads }
            if r.records.isEmpty { break }
            for rec in r.records {
                check(rec.session == s.session, "read returned another session's record")
                check(rec.seq > after, "seq not increasing: \(rec.seq) after \(after)")
                check(rec.seq <= r.head, "seq \(rec.seq) above head \(r.head)")
                after = rec.seq
            }
            _ = log.lookup(session: s.session, sub: r.records[0].sub, id: r.records[0].id)
        }
    }
    return heads
}

func fuzzOne(_ bytes: UnsafeRawBufferPointer) {
    clearScratch()
    var used = Set<Int>()
    for (k, r) in pieces(bytes).enumerated() {
        // Named after the header's segment_number when that is small and unused (so logs with gaps, e.g. after
        // retention, are reachable), else after the piece's position.
        var number = k + 1
        if r.count >= 24 {
            var n = 0
            for i in 0..<8 { n |= Int(bytes[r.lowerBound + 16 + i]) << (8 * i) }
            if n >= 1 && n <= 64 && !used.contains(n) { number = n }
        }
        if used.contains(number) { continue }
        used.insert(number)
        writeFile(scratch + "/" + segmentName(number), UnsafeRawBufferPointer(rebasing: bytes[r]))
    }

    // verify: never modifies anything.
    let report = try? TranscriptLog.verify(directory: scratch)

    // Read-only open and reads.
    var readOnlyHeads: [String: UInt64]? = nil
    do {
        let log = try TranscriptLog.openReadOnly(directory: scratch)
        readOnlyHeads = readAll(log)
        _ = try? log.refresh()
        try? log.close()
    } catch {}
    if let report, report.damage.isEmpty {
        guard let heads = readOnlyHeads else { return check(false, "verify found no damage but openReadOnly failed") }
        var verified: [String: UInt64] = [:]
        for s in report.sessions { verified[s.session] = s.head }
        check(verified == heads, "verify and openReadOnly disagree on heads: \(verified) vs \(heads)")
    }

    // Writable open (truncates a torn tail), one append, close; the log must then be clean.
    var options = TranscriptLogOptions(directory: scratch)
    options.fsync = .never
    options.maxRecordBytes = 64 << 10
    func appendOnce(_ log: TranscriptLog) throws -> UInt64 {
        let before = log.head(session: "fz")
        let out = try log.append([
            AppendRequest(session: "fz", id: "fz-\(before)", kind: "k", sub: "s", role: "agent", timestampMs: 1, data: Array("{}".utf8))
        ])
        check(out.count == 1, "one outcome per request")
        if case .appended(let seq) = out[0] { check(seq == before + 1, "append got seq \(seq) after head \(before)") }
        return out[0].seq
    }
    var written: UInt64? = nil
    do {
        let log = try TranscriptLog.open(options)
        written = try? appendOnce(log)
        try? log.close()
    } catch {
        check(readOnlyHeads == nil || error.code != .corrupted, "openReadOnly succeeded but open refused: \(error)")
        // Property 5: repair, then the log opens.
        if (try? TranscriptLog.repair(directory: scratch)) != nil {
            do {
                let log = try TranscriptLog.open(options)
                written = try? appendOnce(log)
                try? log.close()
            } catch {
                check(error.code != .corrupted, "open after repair still finds damage: \(error)")
            }
        }
    }
    if let written {
        guard let after = try? TranscriptLog.verify(directory: scratch) else { return check(false, "verify after append failed") }
        check(after.damage.isEmpty, "damage after a clean open + append: \(after.damage)")
        if let log = try? TranscriptLog.openReadOnly(directory: scratch) {
            let r = try? log.read(session: "fz", after: written - 1, limit: 1)
            check(r?.records.first?.seq == written, "appended event \(written) not readable")
            try? log.close()
        } else {
            check(false, "openReadOnly after a clean append failed")
        }
    }
}

scratchPath = scratch

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzOne(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

exit(fuzz_driver_main(CommandLine.argc, CommandLine.unsafeArgv) { data, size in
    fuzzOne(UnsafeRawBufferPointer(start: data, count: size))
    return 0
})
