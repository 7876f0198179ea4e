/// The contract's rules for identifiers (protocol-v1.md, "Rules and limits"), checked on UTF-8 bytes.
///
/// "Characters" are counted as Unicode scalars. A browser that checks `id.length <= 128` counts UTF-16 code units,
/// which is never fewer than scalars, so anything a JavaScript client accepts we accept too.
public enum FieldRules {
    /// Maximum length of a session id, in characters.
    public static let maxSessionIDLength = 128
    /// Maximum length of a publisher message id, in characters.
    public static let maxPublisherIDLength = 128
    /// Maximum length of an event kind, in characters.
    public static let maxKindLength = 64

    /// Whether `id` is a valid session id: 1-128 characters of `A-Z a-z 0-9 . _ : -`.
    /// - Parameter id: The candidate session id.
    public static func isValidSessionID(_ id: String) -> Bool {
        var id = id
        return id.withUTF8 { isValidSessionID(utf8: UnsafeRawBufferPointer($0)) }
    }

    /// The session id rule on UTF-8 bytes (what the decoder checks before building a `String`).
    static func isValidSessionID(utf8: UnsafeRawBufferPointer) -> Bool {
        // Every allowed character is one ASCII byte, so the byte count is the character count.
        guard !utf8.isEmpty, utf8.count <= maxSessionIDLength else { return false }
        for c in utf8 where !isSessionByte(c) { return false }
        return true
    }

    /// Whether `id` is a valid publisher message id: 1-128 printable characters.
    ///
    /// Printable means: not a C0 control (U+0000-U+001F), not DEL (U+007F), not a C1 control (U+0080-U+009F).
    /// Everything else, including spaces and non-ASCII letters, is allowed, as the contract says "any printable".
    /// - Parameter id: The candidate id.
    public static func isValidPublisherID(_ id: String) -> Bool {
        var id = id
        return id.withUTF8 { isValidPublisherID(utf8: UnsafeRawBufferPointer($0)) }
    }

    /// The publisher id rule on valid UTF-8 bytes (Swift strings and scanned JSON strings both are).
    static func isValidPublisherID(utf8: UnsafeRawBufferPointer) -> Bool {
        var count = 0
        var i = 0
        let n = utf8.count
        while i < n {
            let c = utf8[i]
            // C0 controls and DEL are single bytes; C1 controls U+0080-U+009F are encoded as C2 80 ... C2 9F.
            if c < 0x20 || c == 0x7F { return false }
            if c == 0xC2, i + 1 < n, utf8[i + 1] <= 0x9F { return false }
            // Count scalars by their lead bytes (everything that is not a 10xxxxxx continuation byte).
            if c & 0xC0 != 0x80 {
                count += 1
                if count > maxPublisherIDLength { return false }
            }
            i += 1
        }
        return count > 0
    }

    /// Whether `kind` is a valid event kind: 1-64 characters of `a-z 0-9 . _ -`.
    /// - Parameter kind: The candidate kind.
    public static func isValidKind(_ kind: String) -> Bool {
        var kind = kind
        return kind.withUTF8 { isValidKind(utf8: UnsafeRawBufferPointer($0)) }
    }

    /// The kind rule on UTF-8 bytes.
    static func isValidKind(utf8: UnsafeRawBufferPointer) -> Bool {
        guard !utf8.isEmpty, utf8.count <= maxKindLength else { return false }
        for c in utf8 where !isKindByte(c) { return false }
        return true
    }

    @inline(__always) static func isSessionByte(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: ":"),
            UInt8(ascii: "-"):
            true
        default:
            false
        }
    }

    @inline(__always) static func isKindByte(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."),
            UInt8(ascii: "_"), UInt8(ascii: "-"):
            true
        default:
            false
        }
    }
}

/// Helpers about event kinds.
public enum FrameKind {
    /// Whether an event is ephemeral: fanned out but never stored, and acked without `seq`.
    ///
    /// An event is ephemeral if the publisher set `"ephemeral": true` or its kind ends in `.delta` (streaming tokens
    /// are superseded by the final message, so storing them would only grow the log).
    /// - Parameters:
    ///   - kind: The event kind.
    ///   - flag: The publish frame's `ephemeral` field (`false` when absent).
    public static func isEphemeral(kind: String, flag: Bool) -> Bool {
        flag || kind.utf8.reversed().starts(with: ".delta".utf8.reversed())
    }
}
