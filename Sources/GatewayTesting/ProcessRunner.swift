import Foundation
import GatewayClient
import Glibc
import Synchronization

/// How a child process ended.
public enum ProcessExitStatus: Sendable, Hashable, CustomStringConvertible {
    /// Normal exit with this status code.
    case exited(Int32)
    /// Killed by this signal (for example `SIGKILL` = 9).
    case signaled(Int32)

    /// Decodes a `waitpid` status (the `WIFEXITED`/`WTERMSIG` macros are not importable).
    init(waitStatus status: Int32) {
        if status & 0x7F == 0 {
            self = .exited((status >> 8) & 0xFF)
        } else {
            self = .signaled(status & 0x7F)
        }
    }

    /// `exited(0)` is success.
    public var isSuccess: Bool { self == .exited(0) }

    /// `exit 3` or `signal 9`.
    public var description: String {
        switch self {
        case .exited(let code): "exit \(code)"
        case .signaled(let signal): "signal \(signal)"
        }
    }
}

/// A child process (for example the `gateway` binary) started with `posix_spawn`, stdout and stderr captured to
/// files, stdin from `/dev/null`.
///
/// The child gets default dispositions for SIGPIPE, SIGTERM, SIGINT and SIGHUP and an empty signal mask, whatever the
/// test process uses. `deinit` sends SIGKILL and reaps the child if nobody waited for it, so a failing test never
/// leaks a gateway.
///
/// `@unchecked Sendable` invariant: the stored properties are immutable after `init` except `exit`, which lives in a
/// `Mutex`; `waitpid` is only called while holding it, so the child is reaped exactly once and its PID is never
/// signalled after it was reaped (no PID-reuse accidents).
public final class ProcessRunner: @unchecked Sendable {
    /// Process id of the child.
    public let pid: pid_t
    /// Path of the executable.
    public let executable: String
    /// File receiving the child's stdout.
    public let stdoutPath: String
    /// File receiving the child's stderr.
    public let stderrPath: String

    private let exit = Mutex<ProcessExitStatus?>(nil)

    /// Starts `executable` with `arguments`.
    /// - Parameters:
    ///   - executable: Absolute path (no `PATH` search).
    ///   - arguments: Arguments after argv[0].
    ///   - environment: Variables to set; added to (and overriding) the test's environment when
    ///     `inheritEnvironment` is `true`.
    ///   - inheritEnvironment: Start from the test process's environment.
    ///   - workingDirectory: Directory for the child, or `nil` for the current one.
    ///   - outputDirectory: Where `<name>.<pid>.stdout` / `.stderr` go; `nil` creates a fresh temporary directory.
    /// - Throws: `.processFailed` if the output files cannot be created or `posix_spawn` fails.
    public init(
        executable: String, arguments: [String] = [], environment: [String: String] = [:],
        inheritEnvironment: Bool = true, workingDirectory: String? = nil, outputDirectory: String? = nil
    ) throws {
        self.executable = executable
        let directory = try outputDirectory ?? TemporaryDirectory.make(prefix: "gateway-test-proc")
        let base = (executable as NSString).lastPathComponent
        let unique = "\(base).\(getpid()).\(UInt32.random(in: 0 ... .max))"
        stdoutPath = directory + "/" + unique + ".stdout"
        stderrPath = directory + "/" + unique + ".stderr"

        var env = inheritEnvironment ? ProcessInfo.processInfo.environment : [:]
        for (key, value) in environment { env[key] = value }

        var actions = posix_spawn_file_actions_t()
        var attributes = posix_spawnattr_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawnattr_init(&attributes)
        defer {
            posix_spawn_file_actions_destroy(&actions)
            posix_spawnattr_destroy(&attributes)
        }
        let createFlags = O_WRONLY | O_CREAT | O_TRUNC  // no O_CLOEXEC: these become fds 1 and 2 of the child
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, createFlags, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, createFlags, 0o644)
        if let workingDirectory {
            guard let addChdir = Self.addChdir else {
                throw GatewayTestingError.processFailed("posix_spawn_file_actions_addchdir_np unavailable")
            }
            _ = addChdir(&actions, workingDirectory)
        }

        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var child: pid_t = 0
        let rc = posix_spawn(&child, executable, &actions, &attributes, argv, envp)
        guard rc == 0 else {
            throw GatewayTestingError.processFailed("posix_spawn \(executable): \(errnoText(rc))")
        }
        pid = child
    }

    /// glibc ≥ 2.29 has `posix_spawn_file_actions_addchdir_np`, but Swift's Glibc module hides it (it needs
    /// `_GNU_SOURCE`), so it is looked up at run time.
    private typealias AddChdir = @convention(c) (
        UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?
    ) -> Int32
    private static let addChdir: AddChdir? = {
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addchdir_np") else { return nil }
        return unsafeBitCast(symbol, to: AddChdir.self)
    }()

    deinit {
        exit.withLock { status in
            guard status == nil else { return }
            Glibc.kill(pid, SIGKILL)
            var raw: Int32 = 0
            while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
            status = ProcessExitStatus(waitStatus: raw)
        }
    }

    /// Sends `signal` to the child (ignored once it has been reaped).
    /// - Parameters:
    ///   - signal: Signal number, for example `SIGTERM` or `SIGKILL`.
    /// - Throws: `.processFailed` if `kill(2)` fails.
    public func send(signal: Int32) throws {
        try exit.withLock { status in
            guard status == nil else { return }
            guard Glibc.kill(pid, signal) == 0 else {
                throw GatewayTestingError.processFailed("kill(\(pid), \(signal)): \(errnoText())")
            }
        }
    }

    /// Sends SIGTERM (graceful shutdown).
    /// - Throws: As `send(signal:)`.
    public func terminate() throws { try send(signal: SIGTERM) }

    /// Sends SIGKILL (crash simulation).
    /// - Throws: As `send(signal:)`.
    public func kill() throws { try send(signal: SIGKILL) }

    /// Reaps the child if it has ended; never blocks.
    /// - Returns: The exit status, or `nil` while the child runs.
    public func poll() -> ProcessExitStatus? {
        exit.withLock { status in
            if let status { return status }
            var raw: Int32 = 0
            let rc = waitpid(pid, &raw, WNOHANG)
            if rc == pid { status = ProcessExitStatus(waitStatus: raw) }
            return status
        }
    }

    /// `true` until the child has ended.
    public var isRunning: Bool { poll() == nil }

    /// Waits for the child to end.
    /// - Parameters:
    ///   - timeout: Bound for the wait.
    /// - Returns: The exit status.
    /// - Throws: `.timeout` if the child still runs at the deadline (it is not killed).
    @discardableResult
    public func wait(timeout: Duration) throws -> ProcessExitStatus {
        let deadline = Deadline.after(timeout)
        while true {
            if let status = poll() { return status }
            guard ContinuousClock.now < deadline else {
                throw GatewayTestingError.timeout("process \(pid) still running")
            }
            usleep(5_000)
        }
    }

    /// Captured stdout so far (lossy UTF-8).
    public func stdout() -> String { Self.readText(stdoutPath) }

    /// Captured stderr so far (lossy UTF-8).
    public func stderr() -> String { Self.readText(stderrPath) }

    private static func readText(_ path: String) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { return "" }
        return String(decoding: data, as: UTF8.self)
    }

    /// Waits until a complete line on stdout or stderr satisfies `predicate`.
    /// - Parameters:
    ///   - timeout: Bound for the wait.
    ///   - predicate: Test for one line (without the newline).
    /// - Returns: The first matching line (older lines count too).
    /// - Throws: `.timeout` (with the tail of stderr in the detail), or `.processFailed` if the child exits first.
    public func waitForLine(timeout: Duration, where predicate: (String) -> Bool) throws -> String {
        let deadline = Deadline.after(timeout)
        while true {
            let exited = poll()
            for text in [stderr(), stdout()] {
                // Only complete lines: a half-written line could show a truncated port number.
                let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
                let completeCount = text.hasSuffix("\n") ? lines.count : max(0, lines.count - 1)
                for line in lines.prefix(completeCount) where predicate(String(line)) { return String(line) }
            }
            if let exited {
                throw GatewayTestingError.processFailed("process \(pid) ended (\(exited)): \(tail(stderr()))")
            }
            guard ContinuousClock.now < deadline else {
                throw GatewayTestingError.timeout("no matching output line; stderr tail: \(tail(stderr()))")
            }
            usleep(10_000)
        }
    }

    /// Waits for a line like `listening on 127.0.0.1 port=8080` and returns the port.
    ///
    /// Accepts `port=N`, `port: N`, `"port":N` and `port N` on any line that contains "listening" (any case).
    /// - Parameters:
    ///   - timeout: Bound for the wait.
    /// - Returns: The port (1…65535).
    /// - Throws: As `waitForLine(timeout:where:)`.
    public func waitForListeningPort(timeout: Duration = .seconds(10)) throws -> Int {
        let line = try waitForLine(timeout: timeout) { Self.listeningPort(in: $0) != nil }
        guard let port = Self.listeningPort(in: line) else {
            throw GatewayTestingError.processFailed("unparsable listening line")
        }
        return port
    }

    /// Extracts the port from a "listening … port=N" line.
    /// - Parameters:
    ///   - line: One output line.
    /// - Returns: The port, or `nil` if the line does not announce one.
    public static func listeningPort(in line: String) -> Int? {
        let lower = line.lowercased()
        guard lower.contains("listening") else { return nil }
        var rest = Substring(lower)
        while let range = rest.range(of: "port") {
            var after = rest[range.upperBound...]
            after = after.drop(while: { $0 == "\"" || $0 == "'" || $0 == " " || $0 == "=" || $0 == ":" })
            let digits = after.prefix(while: { $0.isASCII && $0.isNumber })
            if !digits.isEmpty, digits.count <= 5, let port = Int(digits), (1...65535).contains(port) { return port }
            rest = rest[range.upperBound...]
        }
        return nil
    }

    private func tail(_ text: String) -> String {
        String(text.suffix(2000))
    }
}
