import Foundation
import GatewayClient
import Glibc
import Synchronization

// MARK: Replies

/// One RESP2 reply from Redis.
public enum RedisReply: Equatable, Sendable, CustomStringConvertible {
    /// `+OK`: a simple string.
    case status(String)
    /// `-ERR …`: an error reply (the text after `-`, for example `"ERR unknown command …"`).
    case error(String)
    /// `:42`: an integer.
    case integer(Int64)
    /// `$3\r\nabc`: a bulk string; `nil` for the nil bulk string `$-1`.
    case bulk([UInt8]?)
    /// `*2\r\n…`: an array (elements may be arrays again); `nil` for the nil array `*-1`.
    case array([RedisReply]?)

    /// The text of a status or (UTF-8, lossy) bulk string; `nil` for anything else, including nil bulk strings.
    public var string: String? {
        switch self {
        case .status(let text): text
        case .bulk(let bytes?): String(decoding: bytes, as: UTF8.self)
        default: nil
        }
    }

    /// An integer reply, or a status or bulk string holding a decimal integer (`HGET` answers bulk strings).
    public var int: Int64? {
        switch self {
        case .integer(let value): value
        case .status, .bulk: string.flatMap { Int64($0) }
        default: nil
        }
    }

    /// The bytes of a bulk string (or of a status); `nil` otherwise.
    public var bytes: [UInt8]? {
        switch self {
        case .bulk(let bytes): bytes
        case .status(let text): Array(text.utf8)
        default: nil
        }
    }

    /// The elements of a non-nil array; `nil` otherwise.
    public var elements: [RedisReply]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    /// The text of an error reply; `nil` otherwise.
    public var errorMessage: String? {
        if case .error(let text) = self { return text }
        return nil
    }

    /// `true` for the nil bulk string and the nil array.
    public var isNil: Bool { self == .bulk(nil) || self == .array(nil) }

    /// Roughly as `redis-cli` prints it: `OK`, `(error) ERR …`, `(integer) 3`, `"text"`, `(nil)`, `[a, b]`.
    public var description: String {
        switch self {
        case .status(let text): text
        case .error(let text): "(error) \(text)"
        case .integer(let value): "(integer) \(value)"
        case .bulk(nil), .array(nil): "(nil)"
        case .bulk(let bytes?): String(reflecting: String(decoding: bytes, as: UTF8.self))
        case .array(let elements?): "[" + elements.map(\.description).joined(separator: ", ") + "]"
        }
    }
}

// MARK: RESP2 encoding and decoding

/// The RESP2 wire format: requests as arrays of bulk strings, replies decoded into ``RedisReply``.
public enum RESP {
    /// The request `*N\r\n$len\r\narg\r\n…` for one command.
    /// - Parameters:
    ///   - arguments: The command name and its arguments, as raw bytes.
    /// - Returns: The bytes to send.
    public static func encode(_ arguments: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16 + arguments.reduce(0) { $0 + $1.count + 16 })
        out.append(contentsOf: Array("*\(arguments.count)\r\n".utf8))
        for argument in arguments {
            out.append(contentsOf: Array("$\(argument.count)\r\n".utf8))
            out.append(contentsOf: argument)
            out.append(contentsOf: [13, 10])
        }
        return out
    }

    /// Decodes every reply in `bytes`.
    /// - Parameters:
    ///   - bytes: Complete replies, back to back.
    /// - Returns: The replies in order.
    /// - Throws: `.ioFailed` ("RESP: …") for malformed input or a truncated last reply.
    public static func decode(_ bytes: [UInt8]) throws -> [RedisReply] {
        var decoder = RESPDecoder()
        decoder.append(bytes)
        var replies: [RedisReply] = []
        while decoder.buffered > 0 {
            replies.append(try decoder.next { _ in throw GatewayTestingError.ioFailed("RESP: truncated reply") })
        }
        return replies
    }
}

/// A pull decoder over a growing byte buffer. `more` appends at least one byte to the buffer or throws.
///
/// A failed `next` (for example a timeout while waiting for the rest of a reply) leaves the decoder where the
/// reply started, with everything received so far still buffered, so the next call can try again.
struct RESPDecoder {
    /// Redis's own `proto-max-bulk-len` default.
    static let maxBulkBytes = 512 * 1024 * 1024
    static let maxElements = 1 << 26
    static let maxDepth = 64
    static let maxLineBytes = 1 << 20

    private var buffer: [UInt8] = []
    private var position = 0

    /// Bytes received but not yet decoded.
    var buffered: Int { buffer.count - position }

    mutating func append(_ bytes: some Sequence<UInt8>) { buffer.append(contentsOf: bytes) }

    /// Decodes the next complete reply, calling `more` while the buffer does not hold one.
    mutating func next(more: (inout [UInt8]) throws -> Void) throws -> RedisReply {
        if position > 0, position == buffer.count || position >= 1 << 16 {
            buffer.removeSubrange(0..<position)
            position = 0
        }
        let start = position
        do {
            return try reply(depth: 0, more: more)
        } catch {
            position = start
            throw error
        }
    }

    private mutating func reply(depth: Int, more: (inout [UInt8]) throws -> Void) throws -> RedisReply {
        guard depth <= Self.maxDepth else { throw Self.malformed("nesting deeper than \(Self.maxDepth)") }
        let header = try line(more: more)
        guard let type = header.first else { throw Self.malformed("empty line") }
        let text = String(decoding: header.dropFirst(), as: UTF8.self)
        switch type {
        case UInt8(ascii: "+"):
            return .status(text)
        case UInt8(ascii: "-"):
            return .error(text)
        case UInt8(ascii: ":"):
            guard let value = Int64(text) else { throw Self.malformed("integer \(String(reflecting: text))") }
            return .integer(value)
        case UInt8(ascii: "$"):
            guard let count = Int(text), (-1...Self.maxBulkBytes).contains(count) else {
                throw Self.malformed("bulk length \(String(reflecting: text))")
            }
            if count == -1 { return .bulk(nil) }
            while buffer.count - position < count + 2 { try more(&buffer) }
            guard buffer[position + count] == 13, buffer[position + count + 1] == 10 else {
                throw Self.malformed("bulk string of \(count) bytes not followed by CRLF")
            }
            let bytes = Array(buffer[position..<(position + count)])
            position += count + 2
            return .bulk(bytes)
        case UInt8(ascii: "*"):
            guard let count = Int(text), (-1...Self.maxElements).contains(count) else {
                throw Self.malformed("array length \(String(reflecting: text))")
            }
            if count == -1 { return .array(nil) }
            var elements: [RedisReply] = []
            elements.reserveCapacity(min(count, 1024))
            for _ in 0..<count { elements.append(try reply(depth: depth + 1, more: more)) }
            return .array(elements)
        default:
            throw Self.malformed("unexpected type byte \(type)")
        }
    }

    /// The next line without its CRLF.
    private mutating func line(more: (inout [UInt8]) throws -> Void) throws -> ArraySlice<UInt8> {
        var scan = position
        while true {
            while scan + 1 < buffer.count {
                if buffer[scan] == 13 && buffer[scan + 1] == 10 {
                    let line = buffer[position..<scan]
                    position = scan + 2
                    return line
                }
                scan += 1
            }
            guard buffer.count - position <= Self.maxLineBytes else {
                throw Self.malformed("line longer than \(Self.maxLineBytes) bytes")
            }
            try more(&buffer)
        }
    }

    private static func malformed(_ detail: String) -> GatewayTestingError {
        .ioFailed("RESP: malformed reply: \(detail)")
    }
}

// MARK: Connection

/// One TCP connection to Redis speaking RESP2: send commands, read replies (also pub/sub messages after
/// `SUBSCRIBE`). Blocking, every wait bounded.
///
/// Not `Sendable`: one owner uses it at a time. After an I/O error other than a timeout, close it.
public final class RESPConnection {
    private var fd: Int32
    private var decoder = RESPDecoder()
    private var scratch = [UInt8](repeating: 0, count: 64 * 1024)
    /// Default bound for a connect, a send or one reply.
    public let timeout: Duration

    /// Connects to `host:port`.
    /// - Parameters:
    ///   - host: A numeric IPv4 address.
    ///   - port: The TCP port.
    ///   - timeout: Bound for the connect; also `SO_SNDTIMEO`/`SO_RCVTIMEO` and the default bound for each reply.
    /// - Throws: `.ioFailed` if the connect fails (for example refused), `.timeout`.
    public init(host: String = "127.0.0.1", port: Int, timeout: Duration = .seconds(5)) throws {
        self.timeout = timeout
        fd = try Self.connect(host: host, port: port, timeout: timeout)
    }

    deinit { close() }

    /// Closes the socket (idempotent).
    public func close() {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
    }

    /// Sends one command and reads its reply.
    /// - Parameters:
    ///   - arguments: Command name and arguments (UTF-8).
    ///   - timeout: Bound for the reply, or `nil` for ``timeout``.
    /// - Returns: The reply; an error reply is returned as ``RedisReply/error(_:)``, not thrown.
    /// - Throws: `.ioFailed` (connection closed, malformed reply), `.timeout`.
    public func command(_ arguments: [String], timeout: Duration? = nil) throws -> RedisReply {
        try command(bytes: arguments.map { Array($0.utf8) }, timeout: timeout)
    }

    /// ``command(_:timeout:)`` with binary-safe arguments.
    public func command(bytes arguments: [[UInt8]], timeout: Duration? = nil) throws -> RedisReply {
        try send(bytes: arguments)
        return try receive(timeout: timeout)
    }

    /// Sends one command without reading its reply (pipelining, `SUBSCRIBE`).
    /// - Throws: `.ioFailed`, `.timeout` (`SO_SNDTIMEO`).
    public func send(_ arguments: [String]) throws {
        try send(bytes: arguments.map { Array($0.utf8) })
    }

    /// ``send(_:)`` with binary-safe arguments.
    public func send(bytes arguments: [[UInt8]]) throws {
        guard fd >= 0 else { throw GatewayTestingError.ioFailed("redis connection is closed") }
        let request = RESP.encode(arguments)
        var offset = 0
        while offset < request.count {
            let sent = request.withUnsafeBytes { raw in
                Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if sent > 0 {
                offset += sent
            } else if sent < 0 && errno == EINTR {
                continue
            } else if sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                throw GatewayTestingError.timeout("redis send: SO_SNDTIMEO expired")
            } else {
                throw GatewayTestingError.ioFailed("redis send: \(errnoText())")
            }
        }
    }

    /// Reads the next reply (or pub/sub message).
    /// - Parameters:
    ///   - timeout: Bound for the whole reply, or `nil` for ``timeout``.
    /// - Returns: The reply.
    /// - Throws: `.timeout` if no complete reply arrived in time (the connection stays usable), `.ioFailed`.
    public func receive(timeout: Duration? = nil) throws -> RedisReply {
        guard fd >= 0 else { throw GatewayTestingError.ioFailed("redis connection is closed") }
        let deadline = Deadline.after(timeout ?? self.timeout)
        let fd = self.fd
        return try scratch.withUnsafeMutableBytes { scratch in
            try decoder.next { buffer in
                try Self.readMore(fd: fd, into: &buffer, scratch: scratch, deadline: deadline)
            }
        }
    }

    /// Waits (bounded by `deadline`) for data and appends what one `recv` returns.
    private static func readMore(
        fd: Int32, into buffer: inout [UInt8], scratch: UnsafeMutableRawBufferPointer, deadline: ContinuousClock.Instant
    ) throws {
        while true {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let polled = poll(&pfd, 1, Deadline.millisecondsLeft(deadline))
            if polled < 0 && errno == EINTR { continue }
            if polled < 0 { throw GatewayTestingError.ioFailed("redis poll: \(errnoText())") }
            if polled == 0 { throw GatewayTestingError.timeout("no complete reply from redis") }
            let count = recv(fd, scratch.baseAddress, scratch.count, 0)
            if count > 0 {
                buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[0..<count]))
                return
            }
            if count == 0 { throw GatewayTestingError.ioFailed("redis closed the connection") }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK {
                throw GatewayTestingError.timeout("redis recv: SO_RCVTIMEO expired")
            }
            throw GatewayTestingError.ioFailed("redis recv: \(errnoText())")
        }
    }

    /// A blocking socket connected within `timeout` (non-blocking connect plus `poll`), with `SO_RCVTIMEO` and
    /// `SO_SNDTIMEO` set to `timeout`.
    private static func connect(host: String, port: Int, timeout: Duration) throws -> Int32 {
        guard (1...65535).contains(port) else { throw GatewayTestingError.ioFailed("bad redis port \(port)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            throw GatewayTestingError.ioFailed("not a numeric IPv4 address: \(host)")
        }
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let fd = socket(AF_INET, type, 0)
        guard fd >= 0 else { throw GatewayTestingError.ioFailed("socket: \(errnoText())") }
        do {
            let deadline = Deadline.after(timeout)
            var rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            if rc != 0 && (errno == EINPROGRESS || errno == EINTR) {
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                var polled: Int32
                repeat {
                    polled = poll(&pfd, 1, Deadline.millisecondsLeft(deadline))
                } while polled < 0 && errno == EINTR
                if polled == 0 { throw GatewayTestingError.timeout("connect to redis \(host):\(port)") }
                var soError: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &length)
                if polled > 0 && soError == 0 {
                    rc = 0
                } else if soError != 0 {
                    errno = soError
                }
            }
            guard rc == 0 else {
                throw GatewayTestingError.ioFailed("connect to redis \(host):\(port): \(errnoText())")
            }
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, (flags < 0 ? 0 : flags) & ~O_NONBLOCK)
            let (seconds, attoseconds) = max(timeout, .milliseconds(1)).components
            var interval = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            return fd
        } catch {
            Glibc.close(fd)
            throw error
        }
    }
}

// MARK: Server

/// A real `redis-server` (the one on `PATH`) for a test, started as a child process with the repository's
/// `Config/redis.conf` on an ephemeral loopback port and a temporary data directory:
/// `redis-server Config/redis.conf --port P --dir D --bind 127.0.0.1 --daemonize no --save ""`.
///
/// Tests use it through ``withRedis(dataDir:_:)``, which always stops it. ``kill9()`` crashes it, ``restart(timeout:)``
/// starts it again on the same port and directory (Redis reloads its AOF), ``command(_:timeout:)`` talks RESP2 to it.
/// `deinit` kills a still-running server and removes the temporary directories, so a failing test leaks nothing.
///
/// `@unchecked Sendable` invariant: the stored properties are immutable after `init` except the current child,
/// which lives in a `Mutex` that is held for every start, stop and kill (so they never overlap). Commands take no
/// lock: each opens its own connection.
public final class RedisServer: @unchecked Sendable {
    private struct State {
        var runner: ProcessRunner
        /// The child's end is expected (``kill9()``/``stop(allowingFailure:timeout:)`` ended it), or was reported.
        var ended = false
    }

    /// The loopback TCP port.
    public let port: Int
    /// The Redis working directory (`--dir`): the AOF lives in `<dataDir>/appendonlydir`.
    public let dataDir: String
    /// The `redis-server` executable.
    public let executable: String
    /// The configuration file given as the first argument.
    public let configFile: String
    /// `redis://127.0.0.1:<port>`, for `GATEWAY_REDIS_URL`.
    public var url: String { "redis://127.0.0.1:\(port)" }

    private let arguments: [String]
    private let outputDir: String
    private let ownedPaths: [String]
    private let state: Mutex<State>

    /// The repository's `Config/redis.conf`, found from this source file.
    public static let repositoryConfigFile: String = {
        // Sources/GatewayTesting/RedisUnderTest.swift -> repository root.
        var url = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path + "/Config/redis.conf"
    }()

    /// The first executable file `name` in a `PATH` directory (relative entries resolved against the current
    /// directory).
    /// - Parameters:
    ///   - name: A program name, for example `"redis-server"`.
    /// - Returns: An absolute path, or `nil`.
    public static func findOnPath(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        let cwd = FileManager.default.currentDirectoryPath
        for entry in path.split(separator: ":", omittingEmptySubsequences: false) {
            let dir = entry.isEmpty ? cwd : entry.hasPrefix("/") ? String(entry) : cwd + "/" + entry
            let candidate = dir + "/" + name
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue,
                FileManager.default.isExecutableFile(atPath: candidate)
            {
                return candidate
            }
        }
        return nil
    }

    /// Starts `redis-server` and waits until it answers `PING` with `PONG`, retrying on a fresh port (up to
    /// `attempts` times) when the server exits during start-up, for example because another process took the port.
    /// - Parameters:
    ///   - dataDir: An existing directory for the AOF (kept afterwards), or `nil` for a new temporary one (removed).
    ///   - executable: The server binary, or `nil` for `redis-server` on `PATH`.
    ///   - configFile: The configuration file, or `nil` for ``repositoryConfigFile``.
    ///   - extraArguments: More `--name value` arguments, after the defaults (so they override them).
    ///   - attempts: Bound for the port retries.
    ///   - timeout: Bound for each start-up (answering PING, AOF loaded).
    /// - Throws: `.processFailed` if `redis-server` is not on `PATH`, cannot start, or exits during every attempt
    ///   (its log in the detail); `.timeout` if it runs but does not answer in time; `.ioFailed` for files.
    public init(
        dataDir: String? = nil, executable: String? = nil, configFile: String? = nil, extraArguments: [String] = [],
        attempts: Int = 5, timeout: Duration = .seconds(10)
    ) throws {
        guard let executable = executable ?? Self.findOnPath("redis-server") else {
            throw GatewayTestingError.processFailed(
                "redis-server not found on PATH: scripts/install-deps.sh installs it")
        }
        let configFile = configFile ?? Self.repositoryConfigFile
        guard FileManager.default.fileExists(atPath: configFile) else {
            throw GatewayTestingError.ioFailed("redis configuration \(configFile) not found")
        }
        let dir = try dataDir ?? TemporaryDirectory.make(prefix: "redis")
        let out: String
        do {
            out = try TemporaryDirectory.make(prefix: "redis-out")
        } catch {
            if dataDir == nil { TemporaryDirectory.remove(dir) }
            throw error
        }
        let owned = (dataDir == nil ? [dir] : []) + [out]
        var lastFailure = "no attempt"
        var started: (port: Int, runner: ProcessRunner)?
        do {
            for _ in 0..<max(1, attempts) {
                let port = try Self.freePort()
                let arguments = Self.arguments(configFile: configFile, port: port, dataDir: dir, extra: extraArguments)
                switch try Self.launch(executable, arguments, port: port, outputDir: out, timeout: timeout) {
                case .ready(let runner):
                    started = (port, runner)
                case .exited(let detail):
                    lastFailure = detail
                }
                if started != nil { break }
            }
        } catch {
            for path in owned { TemporaryDirectory.remove(path) }
            throw error
        }
        guard let started else {
            for path in owned { TemporaryDirectory.remove(path) }
            throw GatewayTestingError.processFailed(
                "redis-server did not start in \(max(1, attempts)) attempts: \(lastFailure)")
        }
        self.port = started.port
        self.dataDir = dir
        self.executable = executable
        self.configFile = configFile
        self.arguments = Self.arguments(configFile: configFile, port: started.port, dataDir: dir, extra: extraArguments)
        self.outputDir = out
        self.ownedPaths = owned
        self.state = Mutex(State(runner: started.runner))
    }

    deinit {
        state.withLock { state in
            if state.runner.isRunning {
                try? state.runner.kill()
                _ = try? state.runner.wait(timeout: .seconds(10))
            }
        }
        remove()
    }

    private static func arguments(configFile: String, port: Int, dataDir: String, extra: [String]) -> [String] {
        [configFile, "--port", String(port), "--dir", dataDir, "--bind", "127.0.0.1", "--daemonize", "no", "--save", ""]
            + extra
    }

    private enum LaunchOutcome {
        case ready(ProcessRunner)
        /// The child exited during start-up (a port clash, a bad argument): the detail has its log.
        case exited(String)
    }

    /// Spawns the server and waits until it answers PING with PONG and `INFO server` names its pid (so a PONG from
    /// some other server on the same port does not count). Kills the child on a timeout.
    private static func launch(
        _ executable: String, _ arguments: [String], port: Int, outputDir: String, timeout: Duration
    ) throws -> LaunchOutcome {
        let runner = try ProcessRunner(executable: executable, arguments: arguments, outputDirectory: outputDir)
        let deadline = Deadline.after(timeout)
        while true {
            if let status = runner.poll() {
                return .exited("redis-server on port \(port) exited (\(status)): \(Self.tail(runner))")
            }
            if let reply = try? Self.command(port: port, ["PING"], timeout: .seconds(1)), reply == .status("PONG"),
                let info = try? Self.command(port: port, ["INFO", "server"], timeout: .seconds(1)).string,
                Self.parseInfo(info)["process_id"] == String(runner.pid)
            {
                return .ready(runner)
            }
            guard ContinuousClock.now < deadline else {
                try? runner.kill()
                _ = try? runner.wait(timeout: .seconds(5))
                throw GatewayTestingError.timeout(
                    "redis-server on port \(port) did not answer PING within \(timeout): \(Self.tail(runner))")
            }
            usleep(20_000)
        }
    }

    private static func tail(_ runner: ProcessRunner) -> String {
        String((runner.stdout() + runner.stderr()).suffix(2000))
    }

    /// A loopback port that was free a moment ago (bind 127.0.0.1:0, read it back, close).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw GatewayTestingError.ioFailed("socket: \(errnoText())") }
        defer { Glibc.close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, length) == 0 && getsockname(fd, sa, &length) == 0
            }
        }
        guard bound else { throw GatewayTestingError.ioFailed("bind 127.0.0.1:0: \(errnoText())") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    // MARK: Lifecycle

    /// The current child (after a restart, the new one): pid, captured output (the Redis log is its stdout).
    public var process: ProcessRunner { state.withLock { $0.runner } }

    /// `true` while the server process runs.
    public var isRunning: Bool { process.isRunning }

    /// The current child's log (stdout, then stderr).
    public func log() -> String {
        let runner = process
        return runner.stdout() + runner.stderr()
    }

    /// SIGKILL and reap: a crash (whatever `appendfsync always` has fsynced survives). Does nothing if the server
    /// is not running.
    /// - Throws: `.processFailed` if it does not die within 10 s.
    public func kill9() throws {
        try state.withLock { state in
            state.ended = true
            guard state.runner.isRunning else { return }
            try state.runner.kill()
            try state.runner.wait(timeout: .seconds(10))
        }
    }

    /// Starts the server again on the same port with the same data directory, so it reloads its AOF, and waits
    /// until it answers PING (which it does only once the AOF is loaded). A running server is stopped first
    /// (SIGTERM, which fsyncs the AOF). Retries a few times if the new process exits at once (the port still busy).
    /// - Parameters:
    ///   - timeout: Bound for each start-up.
    /// - Throws: `.processFailed` if the server does not start (its log in the detail), `.timeout`.
    public func restart(timeout: Duration = .seconds(10)) throws {
        try state.withLock { state in
            if state.runner.isRunning { try Self.terminate(state.runner, timeout: .seconds(10)) }
            state.ended = true
            var lastFailure = ""
            for attempt in 0..<5 {
                if attempt > 0 { usleep(200_000) }
                switch try Self.launch(executable, arguments, port: port, outputDir: outputDir, timeout: timeout) {
                case .ready(let runner):
                    state = State(runner: runner)
                    return
                case .exited(let detail):
                    lastFailure = detail
                }
            }
            throw GatewayTestingError.processFailed("redis-server did not restart on port \(port): \(lastFailure)")
        }
    }

    /// Stops the server gracefully (SIGTERM: Redis fsyncs the AOF and exits) and reaps it; SIGKILL if it is still
    /// running after `timeout`. Idempotent; after ``kill9()`` it does nothing.
    /// - Parameters:
    ///   - allowingFailure: Accept a server that exited non-zero (on SIGTERM, or earlier on its own).
    ///   - timeout: Bound for the shutdown.
    /// - Throws: `.processFailed` if it did not exit within `timeout`, or exited non-zero.
    public func stop(allowingFailure: Bool = false, timeout: Duration = .seconds(10)) throws {
        try state.withLock { state in
            guard !state.ended else { return }
            state.ended = true
            if state.runner.isRunning { try Self.terminate(state.runner, timeout: timeout) }
            if let status = state.runner.poll(), !status.isSuccess, !allowingFailure {
                throw GatewayTestingError.processFailed(
                    "redis-server \(state.runner.pid) ended with \(status): \(Self.tail(state.runner))")
            }
        }
    }

    /// SIGTERM, bounded wait, SIGKILL if needed.
    private static func terminate(_ runner: ProcessRunner, timeout: Duration) throws {
        try? runner.terminate()
        do {
            try runner.wait(timeout: timeout)
        } catch {
            try? runner.kill()
            _ = try? runner.wait(timeout: .seconds(5))
            throw GatewayTestingError.processFailed(
                "redis-server \(runner.pid) did not exit within \(timeout) of SIGTERM: \(Self.tail(runner))")
        }
    }

    /// Removes the temporary directories this server owns (its data directory unless one was given, and the
    /// directory of its captured output). Call after stopping; ``withRedis(dataDir:_:)`` and `deinit` do.
    public func remove() {
        for path in ownedPaths { TemporaryDirectory.remove(path) }
    }

    // MARK: Commands

    /// Sends one command on a fresh connection and returns the reply.
    /// - Parameters:
    ///   - arguments: Command name and arguments, for example `["HGET", "gw:{s1}:m", "seq"]`.
    ///   - timeout: Bound for the connect and for the reply.
    /// - Returns: The reply; an error reply is returned as ``RedisReply/error(_:)``, not thrown.
    /// - Throws: `.ioFailed` (refused: the server is down), `.timeout`.
    public func command(_ arguments: [String], timeout: Duration = .seconds(5)) throws -> RedisReply {
        try Self.command(port: port, arguments, timeout: timeout)
    }

    /// ``command(_:timeout:)`` with binary-safe arguments.
    public func command(bytes arguments: [[UInt8]], timeout: Duration = .seconds(5)) throws -> RedisReply {
        let connection = try RESPConnection(port: port, timeout: timeout)
        defer { connection.close() }
        return try connection.command(bytes: arguments)
    }

    private static func command(port: Int, _ arguments: [String], timeout: Duration) throws -> RedisReply {
        let connection = try RESPConnection(port: port, timeout: timeout)
        defer { connection.close() }
        return try connection.command(arguments)
    }

    /// A new connection of its own (for `SUBSCRIBE`, pipelining, or many commands).
    /// - Parameters:
    ///   - timeout: As ``RESPConnection/init(host:port:timeout:)``.
    public func connect(timeout: Duration = .seconds(5)) throws -> RESPConnection {
        try RESPConnection(port: port, timeout: timeout)
    }

    /// `CLIENT KILL TYPE pubsub`: drops every subscriber connection (the gateways' pub/sub links).
    /// - Returns: How many connections Redis closed.
    /// - Throws: As ``command(_:timeout:)``; `.processFailed` if Redis answers anything but an integer.
    @discardableResult
    public func clientKillPubSub() throws -> Int64 {
        let reply = try command(["CLIENT", "KILL", "TYPE", "pubsub"])
        guard case .integer(let count) = reply else {
            throw GatewayTestingError.processFailed("CLIENT KILL TYPE pubsub answered \(reply)")
        }
        return count
    }

    /// `INFO <section>` as a dictionary of its `key:value` lines (section headers and blank lines skipped).
    /// - Parameters:
    ///   - section: For example `"persistence"`, `"clients"`, `"stats"`, `"server"`.
    /// - Returns: For example `["aof_enabled": "1", …]`.
    /// - Throws: As ``command(_:timeout:)``; `.processFailed` if Redis answers anything but a bulk string.
    public func info(_ section: String) throws -> [String: String] {
        let reply = try command(["INFO", section])
        guard case .bulk(let bytes?) = reply else {
            throw GatewayTestingError.processFailed("INFO \(section) answered \(reply)")
        }
        return Self.parseInfo(String(decoding: bytes, as: UTF8.self))
    }

    private static func parseInfo(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for raw in text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw[...]
            guard !line.isEmpty, !line.hasPrefix("#"), let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = String(line[line.index(after: colon)...])
        }
        return fields
    }
}

/// Starts a ``RedisServer`` (``RedisServer/init(dataDir:executable:configFile:extraArguments:attempts:timeout:)``),
/// runs `body`, and always stops it and removes its temporary directories. The body's error wins; otherwise a
/// failed shutdown (no exit in time, a non-zero exit) is thrown.
/// - Parameters:
///   - dataDir: An existing directory for the AOF (kept), or `nil` for a temporary one (removed).
///   - body: The test.
@discardableResult
public func withRedis<T>(dataDir: String? = nil, _ body: (RedisServer) async throws -> T) async throws -> T {
    let redis = try RedisServer(dataDir: dataDir)
    let result: T
    do {
        result = try await body(redis)
    } catch {
        try? redis.stop(allowingFailure: true)
        redis.remove()
        throw error
    }
    defer { redis.remove() }
    try redis.stop()
    return result
}
