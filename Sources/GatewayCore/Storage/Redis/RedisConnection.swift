import CHiredis
import Glibc

/// A Redis reply (RESP2), copied out of hiredis's reply object.
enum RedisValue: Sendable, Equatable {
    case string([UInt8])
    case integer(Int64)
    case array([RedisValue])
    case null
    case status(String)
    case error(String)

    init(_ reply: UnsafeMutablePointer<redisReply>) {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            self = .string(r.str.map { Array(UnsafeRawBufferPointer(start: $0, count: r.len)) } ?? [])
        case REDIS_REPLY_INTEGER:
            self = .integer(Int64(r.integer))
        case REDIS_REPLY_ARRAY:
            var items: [RedisValue] = []
            items.reserveCapacity(r.elements)
            for i in 0..<r.elements {
                if let e = r.element[i] { items.append(RedisValue(e)) } else { items.append(.null) }
            }
            self = .array(items)
        case REDIS_REPLY_STATUS:
            self = .status(r.str.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: r.len), as: UTF8.self) } ?? "")
        case REDIS_REPLY_ERROR:
            self = .error(r.str.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: r.len), as: UTF8.self) } ?? "")
        default:
            self = .null
        }
    }

    /// The text of a bulk string or status reply.
    var text: String? {
        switch self {
        case .string(let b): String(decoding: b, as: UTF8.self)
        case .status(let s): s
        default: nil
        }
    }

    /// An integer reply, or a bulk string holding a decimal integer (what `HGET` returns).
    var int: Int64? {
        switch self {
        case .integer(let n): n
        case .string(let b): Int64(String(decoding: b, as: UTF8.self))
        default: nil
        }
    }

    var items: [RedisValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    var errorMessage: String? {
        if case .error(let e) = self { return e }
        return nil
    }
}

/// Why a Redis connection or command failed. After a connection error the connection is unusable.
struct RedisError: Error, CustomStringConvertible, Sendable {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One blocking hiredis connection, used by exactly one thread at a time.
///
/// Writes go through hiredis's output buffer (`append` + `flush`, so a batch is one pipelined write); reads are
/// blocking `redisGetReply` calls bounded by the command timeout, or, for a thread that polls the socket itself
/// (the subscriber), `readAvailable` + `nextBuffered`. A timeout or I/O error leaves hiredis's context unusable:
/// the owner drops the connection and reconnects.
final class RedisConnection {
    private let context: UnsafeMutablePointer<redisContext>
    let endpoint: String

    /// Connects with `timeoutSeconds` for the connect and for every later read and write; selects `database`.
    init(host: String, port: Int, database: Int, timeoutSeconds: Double) throws(RedisError) {
        let tv = timeval(tv_sec: Int(timeoutSeconds), tv_usec: Int((timeoutSeconds - Double(Int(timeoutSeconds))) * 1e6))
        guard let c = redisConnectWithTimeout(host, Int32(port), tv) else {
            throw RedisError("redis \(host):\(port): cannot allocate a connection")
        }
        endpoint = "\(host):\(port)"
        if c.pointee.err != 0 {
            let message = Self.errorText(c)
            redisFree(c)
            throw RedisError("redis \(host):\(port): \(message)")
        }
        context = c
        _ = redisSetTimeout(c, tv)
        _ = redisEnableKeepAlive(c)
        if database != 0 {
            let reply = try command(["SELECT", String(database)])
            if let e = reply.errorMessage {
                throw RedisError("redis \(endpoint): SELECT \(database): \(e)")
            }
        }
    }

    deinit { redisFree(context) }

    /// The socket, for `poll`.
    var fd: Int32 { context.pointee.fd }

    private static func errorText(_ c: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            let n = bytes.firstIndex(of: 0) ?? bytes.count
            return String(decoding: bytes[..<n], as: UTF8.self)
        }
    }

    private func failure(_ what: String) -> RedisError {
        RedisError("redis \(endpoint): \(what): \(Self.errorText(context))")
    }

    /// Appends one command to the output buffer (no I/O).
    func append(_ args: [[UInt8]]) {
        withArgv(args) { argc, argv, lens in
            _ = redisAppendCommandArgv(context, argc, argv, lens)
        }
    }

    func append(_ args: [String]) { append(args.map { Array($0.utf8) }) }

    /// Writes the whole output buffer (blocking, bounded by the timeout).
    func flush() throws(RedisError) {
        var done: Int32 = 0
        var rounds = 0
        while done == 0 {
            if redisBufferWrite(context, &done) != REDIS_OK { throw failure("write") }
            rounds += 1
            if rounds > 1_000_000 { throw RedisError("redis \(endpoint): write made no progress") }
        }
    }

    /// Reads one reply (blocking, bounded by the timeout).
    func readReply() throws(RedisError) -> RedisValue {
        var raw: UnsafeMutableRawPointer? = nil
        if redisGetReply(context, &raw) != REDIS_OK { throw failure("read") }
        guard let raw else { throw RedisError("redis \(endpoint): empty reply") }
        defer { freeReplyObject(raw) }
        return RedisValue(raw.assumingMemoryBound(to: redisReply.self))
    }

    /// One `read(2)` into hiredis's reader (call when `poll` says the socket is readable).
    func readAvailable() throws(RedisError) {
        if redisBufferRead(context) != REDIS_OK { throw failure("read") }
    }

    /// A reply already in the reader's buffer, without I/O; nil if none is complete.
    func nextBuffered() throws(RedisError) -> RedisValue? {
        var raw: UnsafeMutableRawPointer? = nil
        if redisGetReplyFromReader(context, &raw) != REDIS_OK { throw failure("protocol") }
        guard let raw else { return nil }
        defer { freeReplyObject(raw) }
        return RedisValue(raw.assumingMemoryBound(to: redisReply.self))
    }

    /// One command, one reply (blocking).
    func command(_ args: [String]) throws(RedisError) -> RedisValue {
        try command(args.map { Array($0.utf8) })
    }

    func command(_ args: [[UInt8]]) throws(RedisError) -> RedisValue {
        append(args)
        try flush()
        return try readReply()
    }

    /// Several commands in one write, their replies in order.
    func pipeline(_ commands: [[[UInt8]]]) throws(RedisError) -> [RedisValue] {
        for c in commands { append(c) }
        try flush()
        var out: [RedisValue] = []
        out.reserveCapacity(commands.count)
        for _ in commands { out.append(try readReply()) }
        return out
    }

    private func withArgv(_ args: [[UInt8]], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> Void) {
        // One contiguous copy of every argument, then pointers into it (hiredis copies them into its buffer).
        var total = 0
        for a in args { total += a.count }
        let storage = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, total))
        let argv = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: args.count)
        let lens = UnsafeMutablePointer<Int>.allocate(capacity: args.count)
        defer {
            storage.deallocate()
            argv.deallocate()
            lens.deallocate()
        }
        var offset = 0
        for (i, a) in args.enumerated() {
            a.withUnsafeBytes { b in
                if let base = b.baseAddress, !a.isEmpty {
                    UnsafeMutableRawPointer(storage + offset).copyMemory(from: base, byteCount: a.count)
                }
            }
            argv[i] = UnsafePointer(storage + offset)
            lens[i] = a.count
            offset += a.count
        }
        body(Int32(args.count), argv, UnsafePointer(lens))
    }
}
