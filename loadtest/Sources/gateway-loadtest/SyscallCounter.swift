import Foundation
import Glibc

/// Counts the server's socket-write syscalls over the measurement window with `perf stat` (tracepoints
/// `syscalls:sys_enter_{sendto,sendmsg,write,writev}`), so a run can report frames per send: how deep the server
/// coalesces. lws writes plain sockets with `send()` (sendto) and TLS ones through OpenSSL's `write()`; the gateway's
/// transcript log uses `pwrite64`, which is not counted. Started at the window's start, stopped (SIGINT, bounded
/// wait) at its end; any failure is reported as a note and the fields read -1.
final class SyscallCounter {
    static let perfPath = "/usr/bin/perf"
    static let events = ["sendto", "sendmsg", "write", "writev"].map { "syscalls:sys_enter_\($0)" }
    private let process: Process
    private let output: String

    private init(process: Process, output: String) {
        self.process = process
        self.output = output
    }

    /// Starts counting for `o.serverPID` (and `--extra-pids`), or nil when off, perf is missing or no PID is known.
    static func start(_ o: Options) -> SyscallCounter? {
        guard o.syscalls != "off", o.serverPID > 0 else { return nil }
        guard FileManager.default.isExecutableFile(atPath: perfPath) else {
            if o.syscalls == "perf" { writeAll(2, Array("gateway-loadtest: --syscalls perf: \(perfPath) not found\n".utf8)) }
            return nil
        }
        let output = NSTemporaryDirectory() + "gateway-loadtest-perf-\(getpid()).csv"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: perfPath)
        let pids = ([o.serverPID] + o.extraPIDs).map(String.init).joined(separator: ",")
        p.arguments = ["stat", "-x", ",", "-e", events.joined(separator: ","), "-p", pids, "-o", output]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return nil }
        return SyscallCounter(process: p, output: output)
    }

    /// Stops perf and returns the total count (or -1 with why).
    func stop() -> (count: Int64, note: String) {
        defer { unlink(output) }
        if process.isRunning { kill(process.processIdentifier, SIGINT) }
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            process.terminate()
            return (-1, "perf did not stop within 5 s")
        }
        guard let text = try? String(contentsOfFile: output, encoding: .utf8) else { return (-1, "no perf output") }
        var total: Int64 = 0
        var seen = 0
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: ",", omittingEmptySubsequences: false)
            guard f.count >= 3, Self.events.contains(String(f[2])) else { continue }
            guard let n = Int64(f[0]) else { return (-1, "perf could not count \(f[2]): \(f[0])") }
            total += n
            seen += 1
        }
        return seen == Self.events.count ? (total, "") : (-1, "perf counted \(seen) of \(Self.events.count) events")
    }
}
