// A strict RFC 8259 scanner for the gateway's hot path.
//
// Why not Foundation: JSONSerialization and Codable build a full object graph (boxing every value), are slow on the
// per-event path, and cannot hand back the exact bytes of `data`, which the gateway must store and fan out unchanged.
// This scanner validates the whole message in one pass and records, for each top-level member, the value's type and
// the byte range of its raw text; strings and integers are decoded only when a caller asks for them.
//
// Strictness decisions (each one is a place where lenient parsers disagree, which an attacker can exploit):
// - The top level must be exactly one object; anything but whitespace after it is rejected.
// - Nesting is bounded by `maxDepth` (the top-level object counts as depth 1). The scanner is iterative: it keeps an
//   explicit stack of open containers, so deep input costs no native stack and is rejected at `maxDepth + 1`.
// - Duplicate top-level keys are rejected (two parsers that pick different duplicates see different frames). Keys are
//   compared after unescaping, so `"id"` and `"\u0069d"` collide. Duplicates inside nested values (the opaque `data`)
//   are left alone: the gateway never interprets them, it forwards the bytes.
// - `\u` escapes must form valid Unicode scalars: a high surrogate must be followed by an escaped low surrogate and a
//   lone low surrogate is an error. Lone surrogates cannot be represented in UTF-8 or in a Swift `String`, and browsers
//   would each "repair" them differently.
// - Strings must be valid UTF-8 (no overlongs, no encoded surrogates, nothing above U+10FFFF) and must not contain raw
//   control characters (U+0000-U+001F). lws validates UTF-8 on text frames already; checking again costs nothing for
//   ASCII and means the scanner's guarantees do not depend on the transport.
// - Numbers follow the RFC grammar exactly: no leading zeros, no leading `+`, no `.5` or `1.`, no NaN or Infinity.
// - Only space, tab, LF and CR are whitespace.

/// The JSON type of a value found by ``JSONScanner``.
public enum JSONValueType: Sendable, Equatable, CustomStringConvertible {
    /// `{...}`
    case object
    /// `[...]`
    case array
    /// `"..."`
    case string
    /// An RFC 8259 number (integer, fraction or exponent form).
    case number
    /// `true` or `false`.
    case bool
    /// `null`
    case null

    /// The JSON name of the type, as used in error messages.
    public var description: String {
        switch self {
        case .object: "object"
        case .array: "array"
        case .string: "string"
        case .number: "number"
        case .bool: "boolean"
        case .null: "null"
        }
    }
}

/// One member of a scanned top-level object.
///
/// A member holds byte ranges into the scanned buffer, not copies: the scanner builds no strings, so a frame's keys
/// cost nothing unless someone asks for them. Keep the buffer alive (and unchanged) while using the ranges.
public struct JSONMember: Sendable, Equatable {
    /// The byte range of the key's raw text in the scanned input, including the quotes.
    public var keyRange: Range<Int>
    /// Whether the key's raw text contains backslash escapes (if not, its raw bytes are its UTF-8).
    public var keyHasEscapes: Bool
    /// The type of the member's value.
    public var type: JSONValueType
    /// The byte range of the raw value in the scanned input (for strings, including the quotes).
    public var range: Range<Int>
    /// For string values: whether the raw text contains backslash escapes. Always `false` for other types.
    public var valueHasEscapes: Bool

    /// Creates a member record.
    /// - Parameters:
    ///   - keyRange: The key's raw byte range, quotes included.
    ///   - keyHasEscapes: Whether the raw key contains escapes.
    ///   - type: The value's JSON type.
    ///   - range: The raw value's byte range.
    ///   - valueHasEscapes: Whether a string value's raw text contains escapes.
    public init(keyRange: Range<Int>, keyHasEscapes: Bool, type: JSONValueType, range: Range<Int>, valueHasEscapes: Bool) {
        self.keyRange = keyRange
        self.keyHasEscapes = keyHasEscapes
        self.type = type
        self.range = range
        self.valueHasEscapes = valueHasEscapes
    }

    /// The member's key, unescaped.
    /// - Parameter bytes: The buffer that was scanned.
    /// - Returns: The key, or `""` if `bytes` is not the scanned buffer (the ranges do not fit).
    public func key(in bytes: UnsafeRawBufferPointer) -> String {
        JSONScanner.decodeString(bytes, range: keyRange) ?? ""
    }

    /// Calls `body` with the key's unescaped UTF-8 bytes (the raw bytes themselves when there are no escapes).
    func withKeyBytes<R>(in bytes: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        guard keyRange.lowerBound >= 0, keyRange.upperBound <= bytes.count, keyRange.count >= 2 else {
            return body(UnsafeRawBufferPointer(start: nil, count: 0))
        }
        let inner = UnsafeRawBufferPointer(rebasing: bytes[(keyRange.lowerBound + 1)..<(keyRange.upperBound - 1)])
        guard keyHasEscapes else { return body(inner) }
        return (JSONScanner.unescapeBytes(inner) ?? []).withUnsafeBytes(body)
    }
}

/// The members of a scanned top-level object, in input order, with unique keys.
public struct JSONObject: Sendable, Equatable {
    /// The members in the order they appeared.
    public var members: [JSONMember]

    /// Creates an object from already-validated members.
    /// - Parameter members: The members, with unique keys.
    public init(members: [JSONMember]) {
        self.members = members
    }

    /// The member whose unescaped key is `key`, if present.
    /// - Parameters:
    ///   - key: The key to look for, compared byte for byte (never by Unicode canonical equivalence).
    ///   - bytes: The buffer that was scanned.
    public func member(_ key: String, in bytes: UnsafeRawBufferPointer) -> JSONMember? {
        for member in members where member.withKeyBytes(in: bytes, { $0.elementsEqual(key.utf8) }) {
            return member
        }
        return nil
    }
}

/// Why ``JSONScanner`` refused its input, and where.
public struct JSONScanError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kinds of syntax error the scanner reports.
    public enum Reason: Sendable, Equatable {
        /// The input does not start (after whitespace) with `{`.
        case expectedObject
        /// The input ended inside a value.
        case unexpectedEnd
        /// A byte that cannot start or continue a value at this position.
        case unexpectedByte(UInt8)
        /// Bytes other than whitespace follow the top-level object.
        case trailingGarbage
        /// An object member does not start with a string key.
        case expectedKey
        /// A key is not followed by `:`.
        case expectedColon
        /// A value is followed by something other than `,` or the container's closing bracket.
        case expectedCommaOrClose
        /// More than `maxDepth` containers are open at once.
        case tooDeep
        /// The top-level object has more than `maxMembers` members.
        case tooManyMembers
        /// A top-level key appears twice.
        case duplicateKey(String)
        /// A backslash escape other than `\" \\ \/ \b \f \n \r \t \uXXXX`.
        case invalidEscape
        /// A `\u` escape that is a lone or mismatched UTF-16 surrogate.
        case loneSurrogate
        /// A raw byte below 0x20 inside a string.
        case controlCharacter(UInt8)
        /// A string contains bytes that are not valid UTF-8.
        case invalidUTF8
        /// A number that does not match the RFC 8259 grammar (leading zero, missing digits, ...).
        case invalidNumber
        /// A bare word that is not `true`, `false` or `null` (for example `NaN` or `Infinity`).
        case invalidLiteral
    }

    /// What was wrong.
    public var reason: Reason
    /// The byte offset in the input where the problem was detected.
    public var offset: Int

    /// Creates an error.
    /// - Parameters:
    ///   - reason: What was wrong.
    ///   - offset: Where, as a byte offset into the input.
    public init(_ reason: Reason, at offset: Int) {
        self.reason = reason
        self.offset = offset
    }

    /// A short, client-safe description (it never quotes input except a duplicate key, which is escaped on output).
    public var description: String {
        let what: String
        switch reason {
        case .expectedObject: what = "expected a JSON object"
        case .unexpectedEnd: what = "unexpected end of input"
        case .unexpectedByte(let b): what = "unexpected byte 0x\(String(b, radix: 16))"
        case .trailingGarbage: what = "trailing data after the object"
        case .expectedKey: what = "expected a string key"
        case .expectedColon: what = "expected ':'"
        case .expectedCommaOrClose: what = "expected ',' or a closing bracket"
        case .tooDeep: what = "nesting too deep"
        case .tooManyMembers: what = "too many members"
        case .duplicateKey(let key): what = "duplicate key '\(key.prefix(64))'"
        case .invalidEscape: what = "invalid escape"
        case .loneSurrogate: what = "lone surrogate in \\u escape"
        case .controlCharacter(let b): what = "control character 0x\(String(b, radix: 16)) in string"
        case .invalidUTF8: what = "invalid UTF-8"
        case .invalidNumber: what = "invalid number"
        case .invalidLiteral: what = "invalid literal"
        }
        return "\(what) at byte \(offset)"
    }
}

/// Why ``JSONScanner/decodeUInt64(_:range:)`` refused a value.
public enum JSONIntegerError: Error, Sendable, Equatable {
    /// The range does not hold a JSON number.
    case notANumber
    /// The number has a minus sign (and is not zero).
    case negative
    /// The number has a fraction or an exponent.
    case notAnInteger
    /// The number is larger than `UInt64.max`.
    case overflow
}

/// A strict, non-recursive RFC 8259 scanner for one top-level JSON object.
///
/// It never traps on input: every byte access is bounds-checked against the buffer, and nesting depth and member
/// count are limited. It builds no strings and does not allocate per value: the only allocation is the member array
/// (plus, for objects of more than 16 members, the set used for duplicate detection).
public struct JSONScanner: Sendable {
    /// The default maximum nesting depth (the top-level object is depth 1).
    public static let defaultMaxDepth = 64
    /// The default maximum number of top-level members.
    public static let defaultMaxMembers = 256

    /// The maximum nesting depth, counting the top-level object as 1. Values below 1 are treated as 1.
    public var maxDepth: Int
    /// The maximum number of top-level members. Bounds the member array an attacker can make us build.
    public var maxMembers: Int

    /// Creates a scanner.
    /// - Parameters:
    ///   - maxDepth: The maximum nesting depth, counting the top-level object as 1.
    ///   - maxMembers: The maximum number of top-level members.
    public init(maxDepth: Int = JSONScanner.defaultMaxDepth, maxMembers: Int = JSONScanner.defaultMaxMembers) {
        self.maxDepth = maxDepth
        self.maxMembers = maxMembers
    }

    /// Validates `bytes` as exactly one JSON object and returns its top-level members.
    /// - Parameter bytes: The complete message.
    /// - Returns: The members, or the first syntax error found.
    public func scanObject(_ bytes: UnsafeRawBufferPointer) -> Result<JSONObject, JSONScanError> {
        do {
            var parser = Parser(bytes: bytes, maxNested: max(maxDepth, 1) - 1, maxMembers: max(maxMembers, 0))
            return .success(try parser.parseTopLevelObject())
        } catch {
            return .failure(error)
        }
    }

    /// Validates `bytes` as exactly one JSON object and returns its top-level members.
    /// - Parameter bytes: The complete message.
    /// - Returns: The members, or the first syntax error found.
    public func scanObject(_ bytes: [UInt8]) -> Result<JSONObject, JSONScanError> {
        bytes.withUnsafeBytes { scanObject($0) }
    }

    /// Decodes the JSON string at `range` (quotes included) into a Swift `String`, unescaping it.
    ///
    /// Safe on any input: returns `nil` if `range` is out of bounds or does not hold exactly one valid JSON string.
    /// - Parameters:
    ///   - bytes: The buffer that was scanned.
    ///   - range: A string value's range, as reported in ``JSONMember/range``.
    /// - Returns: The unescaped string, or `nil`.
    public static func decodeString(_ bytes: UnsafeRawBufferPointer, range: Range<Int>) -> String? {
        guard let (body, hasEscape) = validatedStringBody(bytes, range: range) else { return nil }
        if !hasEscape {
            return String(decoding: body, as: UTF8.self)
        }
        return unescape(body)
    }

    /// The body (without quotes) of the one valid JSON string at `range`, and whether it has escapes; nil otherwise.
    /// Re-validates: the caller may pass any range, and a validated string tells whether it has escapes.
    private static func validatedStringBody(_ bytes: UnsafeRawBufferPointer, range: Range<Int>) -> (UnsafeRawBufferPointer, Bool)? {
        guard range.lowerBound >= 0, range.upperBound <= bytes.count, range.count >= 2,
            bytes[range.lowerBound] == Byte.quote, bytes[range.upperBound - 1] == Byte.quote
        else { return nil }
        var parser = Parser(bytes: bytes, maxNested: 0, maxMembers: 0)
        parser.index = range.lowerBound
        guard let hasEscape = try? parser.scanString(), parser.index == range.upperBound else { return nil }
        return (UnsafeRawBufferPointer(rebasing: bytes[(range.lowerBound + 1)..<(range.upperBound - 1)]), hasEscape)
    }

    /// Decodes the JSON string at `range` (quotes included) into its unescaped UTF-8 bytes, without building a
    /// `String` (token streams append these bytes as they are).
    ///
    /// Safe on any input: returns `nil` if `range` is out of bounds or does not hold exactly one valid JSON string.
    /// - Parameters:
    ///   - bytes: The buffer that was scanned.
    ///   - range: A string value's range, as reported in ``JSONMember/range``.
    /// - Returns: The unescaped UTF-8 bytes, or `nil`.
    public static func decodeStringBytes(_ bytes: UnsafeRawBufferPointer, range: Range<Int>) -> [UInt8]? {
        guard let (body, hasEscape) = validatedStringBody(bytes, range: range) else { return nil }
        return hasEscape ? unescapeBytes(body) : Array(body)
    }

    /// Decodes the JSON number at `range` as a non-negative integer.
    ///
    /// `-0` is zero and is accepted; fractions and exponents are refused even when integral (`1.0`, `1e3`), because a
    /// field that requires an integer should not accept a different spelling of one.
    /// - Parameters:
    ///   - bytes: The buffer that was scanned.
    ///   - range: A number value's range, as reported in ``JSONMember/range``.
    /// - Returns: The value, or why it is not a `UInt64`.
    public static func decodeUInt64(_ bytes: UnsafeRawBufferPointer, range: Range<Int>) -> Result<UInt64, JSONIntegerError> {
        guard range.lowerBound >= 0, range.upperBound <= bytes.count, !range.isEmpty else { return .failure(.notANumber) }
        var i = range.lowerBound
        var negative = false
        if bytes[i] == Byte.minus {
            negative = true
            i += 1
        }
        guard i < range.upperBound, Byte.isDigit(bytes[i]) else { return .failure(.notANumber) }
        // Leading zeros are a syntax error, not a different integer.
        if bytes[i] == Byte.zero, i + 1 < range.upperBound, Byte.isDigit(bytes[i + 1]) { return .failure(.notANumber) }
        var value: UInt64 = 0
        var overflow = false
        while i < range.upperBound, Byte.isDigit(bytes[i]) {
            if !overflow {
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (s, o2) = m.addingReportingOverflow(UInt64(bytes[i] &- Byte.zero))
                if o1 || o2 { overflow = true } else { value = s }
            }
            i += 1
        }
        if i < range.upperBound {
            let c = bytes[i]
            // The remainder must still be a well-formed fraction/exponent for this to be "a number, but not integer".
            guard c == Byte.dot || c == Byte.lowerE || c == Byte.upperE else { return .failure(.notANumber) }
            var parser = Parser(bytes: bytes, maxNested: 0, maxMembers: 0)
            parser.index = range.lowerBound
            guard (try? parser.scanNumber()) != nil, parser.index == range.upperBound else { return .failure(.notANumber) }
            return .failure(.notAnInteger)
        }
        if negative && (overflow || value != 0) { return .failure(.negative) }
        if overflow { return .failure(.overflow) }
        return .success(value)
    }

    /// Calls `body` with the unescaped UTF-8 bytes of a string member scanned from `bytes` (its raw bytes when it has
    /// no escapes, so the common case copies nothing). Out-of-range or non-string members yield an empty buffer.
    static func withStringBytes<R>(
        _ bytes: UnsafeRawBufferPointer,
        _ member: JSONMember,
        _ body: (UnsafeRawBufferPointer) -> R
    ) -> R {
        let range = member.range
        guard member.type == .string, range.lowerBound >= 0, range.upperBound <= bytes.count, range.count >= 2 else {
            return body(UnsafeRawBufferPointer(start: nil, count: 0))
        }
        let inner = UnsafeRawBufferPointer(rebasing: bytes[(range.lowerBound + 1)..<(range.upperBound - 1)])
        guard member.valueHasEscapes else { return body(inner) }
        return (unescapeBytes(inner) ?? []).withUnsafeBytes(body)
    }

    /// Unescapes the body (no quotes) of an already-validated JSON string into a `String`.
    static func unescape(_ body: UnsafeRawBufferPointer) -> String? {
        unescapeBytes(body).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Unescapes the body (no quotes) of a JSON string into UTF-8 bytes, or `nil` if an escape is malformed.
    static func unescapeBytes(_ body: UnsafeRawBufferPointer) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(body.count)
        var i = 0
        let n = body.count
        while i < n {
            let c = body[i]
            guard c == Byte.backslash else {
                out.append(c)
                i += 1
                continue
            }
            guard i + 1 < n else { return nil }
            let e = body[i + 1]
            i += 2
            switch e {
            case Byte.quote, Byte.backslash, Byte.slash: out.append(e)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                guard let unit = Parser.hex4(body, at: i) else { return nil }
                i += 4
                var scalarValue = UInt32(unit)
                if (0xD800...0xDBFF).contains(unit) {
                    guard i + 6 <= n, body[i] == Byte.backslash, body[i + 1] == UInt8(ascii: "u"),
                        let low = Parser.hex4(body, at: i + 2), (0xDC00...0xDFFF).contains(low)
                    else { return nil }
                    i += 6
                    scalarValue = 0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00)
                }
                guard let scalar = Unicode.Scalar(scalarValue) else { return nil }
                appendUTF8(scalar, to: &out)
            default:
                return nil
            }
        }
        return out
    }

    /// Appends the UTF-8 encoding of `scalar` (1-4 bytes).
    @inline(__always) static func appendUTF8(_ scalar: Unicode.Scalar, to out: inout [UInt8]) {
        let v = scalar.value
        switch v {
        case 0..<0x80:
            out.append(UInt8(truncatingIfNeeded: v))
        case 0x80..<0x800:
            out.append(0xC0 | UInt8(truncatingIfNeeded: v >> 6))
            out.append(0x80 | UInt8(truncatingIfNeeded: v & 0x3F))
        case 0x800..<0x10000:
            out.append(0xE0 | UInt8(truncatingIfNeeded: v >> 12))
            out.append(0x80 | UInt8(truncatingIfNeeded: (v >> 6) & 0x3F))
            out.append(0x80 | UInt8(truncatingIfNeeded: v & 0x3F))
        default:
            out.append(0xF0 | UInt8(truncatingIfNeeded: v >> 18))
            out.append(0x80 | UInt8(truncatingIfNeeded: (v >> 12) & 0x3F))
            out.append(0x80 | UInt8(truncatingIfNeeded: (v >> 6) & 0x3F))
            out.append(0x80 | UInt8(truncatingIfNeeded: v & 0x3F))
        }
    }
}

/// Byte constants, so the scanner reads as the grammar does.
enum Byte {
    static let quote = UInt8(ascii: "\"")
    static let backslash = UInt8(ascii: "\\")
    static let slash = UInt8(ascii: "/")
    static let openBrace = UInt8(ascii: "{")
    static let closeBrace = UInt8(ascii: "}")
    static let openBracket = UInt8(ascii: "[")
    static let closeBracket = UInt8(ascii: "]")
    static let colon = UInt8(ascii: ":")
    static let comma = UInt8(ascii: ",")
    static let minus = UInt8(ascii: "-")
    static let plus = UInt8(ascii: "+")
    static let dot = UInt8(ascii: ".")
    static let zero = UInt8(ascii: "0")
    static let lowerE = UInt8(ascii: "e")
    static let upperE = UInt8(ascii: "E")

    @inline(__always) static func isDigit(_ c: UInt8) -> Bool { c &- zero < 10 }
    @inline(__always) static func isWhitespace(_ c: UInt8) -> Bool {
        c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09
    }
}

/// The scanner's cursor. Every read is preceded by an `index < count` check, so no input can make it read out of bounds.
struct Parser {
    let bytes: UnsafeRawBufferPointer
    let count: Int
    /// How many containers may be open below the top-level object.
    let maxNested: Int
    let maxMembers: Int
    var index = 0

    init(bytes: UnsafeRawBufferPointer, maxNested: Int, maxMembers: Int) {
        self.bytes = bytes
        self.count = bytes.count
        self.maxNested = maxNested
        self.maxMembers = maxMembers
    }

    @inline(__always) mutating func skipWhitespace() {
        while index < count, Byte.isWhitespace(bytes[index]) { index += 1 }
    }

    @inline(__always) func fail(_ reason: JSONScanError.Reason) -> JSONScanError {
        JSONScanError(reason, at: index)
    }

    mutating func parseTopLevelObject() throws(JSONScanError) -> JSONObject {
        skipWhitespace()
        guard index < count, bytes[index] == Byte.openBrace else {
            throw index < count ? fail(.expectedObject) : fail(.unexpectedEnd)
        }
        index += 1
        var members: [JSONMember] = []
        // Typical frames have 2-6 members; reserving avoids the first regrowths without over-allocating.
        members.reserveCapacity(8)
        // Duplicate detection compares raw key bytes for the usual handful of keys (no strings are built); past 16
        // members a set of unescaped keys takes over, so an attacker cannot make the check quadratic.
        var seen: Set<[UInt8]>? = nil
        skipWhitespace()
        guard index < count else { throw fail(.unexpectedEnd) }
        if bytes[index] == Byte.closeBrace {
            index += 1
        } else {
            try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(maxNested, 1)) {
                (stack) throws(JSONScanError) -> Void in
                while true {
                    guard index < count else { throw fail(.unexpectedEnd) }
                    guard bytes[index] == Byte.quote else { throw fail(.expectedKey) }
                    let keyStart = index
                    let keyHasEscapes = try scanString()
                    let keyRange = keyStart..<index
                    guard members.count < maxMembers else { throw JSONScanError(.tooManyMembers, at: keyStart) }
                    if seen == nil && members.count == 16 {
                        seen = Set(members.map { $0.withKeyBytes(in: bytes) { Array($0) } })
                    }
                    if seen != nil {
                        let key = Array(UnsafeRawBufferPointer(rebasing: bytes[(keyStart + 1)..<(index - 1)]))
                        let unescaped = keyHasEscapes ? (key.withUnsafeBytes { JSONScanner.unescapeBytes($0) } ?? key) : key
                        // Optional chaining mutates the set in place (no copy-on-write of the whole set per key).
                        if seen?.insert(unescaped).inserted == false {
                            throw duplicate(unescaped, at: keyStart)
                        }
                    } else {
                        for m in members where sameKey(m.keyRange, m.keyHasEscapes, keyRange, keyHasEscapes) {
                            throw duplicate(
                                JSONMember(keyRange: keyRange, keyHasEscapes: keyHasEscapes, type: .null, range: 0..<0, valueHasEscapes: false)
                                    .withKeyBytes(in: bytes) { Array($0) },
                                at: keyStart
                            )
                        }
                    }
                    skipWhitespace()
                    guard index < count else { throw fail(.unexpectedEnd) }
                    guard bytes[index] == Byte.colon else { throw fail(.expectedColon) }
                    index += 1
                    skipWhitespace()
                    let valueStart = index
                    let (type, valueHasEscapes) = try scanValue(stack: stack)
                    members.append(
                        JSONMember(
                            keyRange: keyRange, keyHasEscapes: keyHasEscapes, type: type, range: valueStart..<index,
                            valueHasEscapes: valueHasEscapes
                        )
                    )
                    skipWhitespace()
                    guard index < count else { throw fail(.unexpectedEnd) }
                    let c = bytes[index]
                    index += 1
                    if c == Byte.comma {
                        skipWhitespace()
                        continue
                    }
                    if c == Byte.closeBrace { break }
                    index -= 1
                    throw fail(.expectedCommaOrClose)
                }
            }
        }
        skipWhitespace()
        guard index == count else { throw fail(.trailingGarbage) }
        return JSONObject(members: members)
    }

    private func duplicate(_ key: [UInt8], at offset: Int) -> JSONScanError {
        JSONScanError(.duplicateKey(String(decoding: key, as: UTF8.self)), at: offset)
    }

    /// Whether two scanned keys are the same after unescaping. Raw bytes are compared when neither has escapes
    /// (the common case, and then raw equality is exact equality).
    private func sameKey(_ a: Range<Int>, _ aEscaped: Bool, _ b: Range<Int>, _ bEscaped: Bool) -> Bool {
        if !aEscaped && !bEscaped {
            guard a.count == b.count else { return false }
            var i = a.lowerBound
            var j = b.lowerBound
            while i < a.upperBound {
                if bytes[i] != bytes[j] { return false }
                i += 1
                j += 1
            }
            return true
        }
        let x = JSONMember(keyRange: a, keyHasEscapes: aEscaped, type: .null, range: 0..<0, valueHasEscapes: false)
        let y = JSONMember(keyRange: b, keyHasEscapes: bEscaped, type: .null, range: 0..<0, valueHasEscapes: false)
        return x.withKeyBytes(in: bytes) { xb in y.withKeyBytes(in: bytes) { yb in xb.elementsEqual(yb) } }
    }

    private enum State {
        case afterOpen
        case value
        case afterValue
    }

    /// Scans one value of any type starting at `index` (no leading whitespace), leaving `index` just past it.
    /// Containers are walked with the explicit `stack`, never by recursion.
    /// - Returns: The value's type and, for strings, whether it contains escapes.
    mutating func scanValue(stack: UnsafeMutableBufferPointer<UInt8>) throws(JSONScanError) -> (JSONValueType, Bool) {
        guard index < count else { throw fail(.unexpectedEnd) }
        let first = bytes[index]
        if first == Byte.quote { return (.string, try scanString()) }
        guard first == Byte.openBrace || first == Byte.openBracket else { return (try scanScalar(first), false) }
        var depth = 0
        guard maxNested > 0 else { throw fail(.tooDeep) }
        stack[0] = first
        depth = 1
        index += 1
        var state = State.afterOpen
        while true {
            skipWhitespace()
            guard index < count else { throw fail(.unexpectedEnd) }
            let c = bytes[index]
            switch state {
            case .afterOpen:
                if stack[depth - 1] == Byte.openBrace {
                    if c == Byte.closeBrace {
                        index += 1
                        depth -= 1
                        if depth == 0 { return (first == Byte.openBrace ? .object : .array, false) }
                        state = .afterValue
                    } else {
                        try scanKeyAndColon()
                        state = .value
                    }
                } else if c == Byte.closeBracket {
                    index += 1
                    depth -= 1
                    if depth == 0 { return (first == Byte.openBrace ? .object : .array, false) }
                    state = .afterValue
                } else {
                    state = .value
                }
            case .value:
                if c == Byte.openBrace || c == Byte.openBracket {
                    guard depth < maxNested else { throw fail(.tooDeep) }
                    stack[depth] = c
                    depth += 1
                    index += 1
                    state = .afterOpen
                } else {
                    _ = try scanScalar(c)
                    state = .afterValue
                }
            case .afterValue:
                let open = stack[depth - 1]
                if c == Byte.comma {
                    index += 1
                    if open == Byte.openBrace {
                        skipWhitespace()
                        try scanKeyAndColon()
                    }
                    state = .value
                } else if (open == Byte.openBrace && c == Byte.closeBrace)
                    || (open == Byte.openBracket && c == Byte.closeBracket)
                {
                    index += 1
                    depth -= 1
                    if depth == 0 { return (first == Byte.openBrace ? .object : .array, false) }
                } else {
                    throw fail(.expectedCommaOrClose)
                }
            }
        }
    }

    /// Scans `"key"` `:` inside a nested object (keys there are validated but not collected).
    private mutating func scanKeyAndColon() throws(JSONScanError) {
        guard index < count else { throw fail(.unexpectedEnd) }
        guard bytes[index] == Byte.quote else { throw fail(.expectedKey) }
        _ = try scanString()
        skipWhitespace()
        guard index < count else { throw fail(.unexpectedEnd) }
        guard bytes[index] == Byte.colon else { throw fail(.expectedColon) }
        index += 1
    }

    private mutating func scanScalar(_ c: UInt8) throws(JSONScanError) -> JSONValueType {
        switch c {
        case Byte.quote:
            _ = try scanString()
            return .string
        case Byte.minus, Byte.zero...UInt8(ascii: "9"):
            try scanNumber()
            return .number
        case UInt8(ascii: "t"):
            try scanLiteral("true")
            return .bool
        case UInt8(ascii: "f"):
            try scanLiteral("false")
            return .bool
        case UInt8(ascii: "n"):
            try scanLiteral("null")
            return .null
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"):
            // NaN, Infinity, undefined, True, ...: a word that is not one of the three literals.
            throw fail(.invalidLiteral)
        default:
            throw fail(.unexpectedByte(c))
        }
    }

    private mutating func scanLiteral(_ word: StaticString) throws(JSONScanError) {
        let n = word.utf8CodeUnitCount
        guard index + n <= count else { throw fail(.invalidLiteral) }
        let p = word.utf8Start
        for k in 0..<n where bytes[index + k] != p[k] {
            throw fail(.invalidLiteral)
        }
        index += n
        // `truex`, `nullnull`: a literal must be followed by a delimiter; the caller's state machine checks that the
        // next byte is `,` `}` `]` or whitespace, but a letter here deserves the clearer error.
        if index < count, (bytes[index] | 0x20) >= UInt8(ascii: "a"), (bytes[index] | 0x20) <= UInt8(ascii: "z") {
            throw fail(.invalidLiteral)
        }
    }

    /// Scans an RFC 8259 number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    mutating func scanNumber() throws(JSONScanError) {
        if index < count, bytes[index] == Byte.minus { index += 1 }
        guard index < count else { throw fail(.unexpectedEnd) }
        if bytes[index] == Byte.zero {
            index += 1
            if index < count, Byte.isDigit(bytes[index]) { throw fail(.invalidNumber) }
        } else if Byte.isDigit(bytes[index]) {
            while index < count, Byte.isDigit(bytes[index]) { index += 1 }
        } else {
            throw fail(.invalidNumber)
        }
        if index < count, bytes[index] == Byte.dot {
            index += 1
            guard index < count, Byte.isDigit(bytes[index]) else { throw fail(.invalidNumber) }
            while index < count, Byte.isDigit(bytes[index]) { index += 1 }
        }
        if index < count, bytes[index] == Byte.lowerE || bytes[index] == Byte.upperE {
            index += 1
            if index < count, bytes[index] == Byte.plus || bytes[index] == Byte.minus { index += 1 }
            guard index < count, Byte.isDigit(bytes[index]) else { throw fail(.invalidNumber) }
            while index < count, Byte.isDigit(bytes[index]) { index += 1 }
        }
    }

    /// Scans a string starting at the opening quote, leaving `index` past the closing quote.
    /// - Returns: Whether the string contains a backslash escape (so decoding needs the slow path).
    mutating func scanString() throws(JSONScanError) -> Bool {
        index += 1
        var hasEscape = false
        while index < count {
            let c = bytes[index]
            if c == Byte.quote {
                index += 1
                return hasEscape
            }
            if c >= 0x20 && c < 0x80 && c != Byte.backslash {
                index += 1
                continue
            }
            if c == Byte.backslash {
                hasEscape = true
                try scanEscape()
            } else if c < 0x20 {
                throw fail(.controlCharacter(c))
            } else {
                try scanUTF8Sequence()
            }
        }
        throw fail(.unexpectedEnd)
    }

    private mutating func scanEscape() throws(JSONScanError) {
        guard index + 1 < count else { throw fail(.unexpectedEnd) }
        switch bytes[index + 1] {
        case Byte.quote, Byte.backslash, Byte.slash, UInt8(ascii: "b"), UInt8(ascii: "f"), UInt8(ascii: "n"),
            UInt8(ascii: "r"), UInt8(ascii: "t"):
            index += 2
        case UInt8(ascii: "u"):
            guard let unit = Parser.hex4(bytes, at: index + 2) else { throw fail(.invalidEscape) }
            if (0xDC00...0xDFFF).contains(unit) { throw fail(.loneSurrogate) }
            if (0xD800...0xDBFF).contains(unit) {
                let next = index + 6
                guard next + 1 < count, bytes[next] == Byte.backslash, bytes[next + 1] == UInt8(ascii: "u"),
                    let low = Parser.hex4(bytes, at: next + 2), (0xDC00...0xDFFF).contains(low)
                else { throw fail(.loneSurrogate) }
                index += 12
            } else {
                index += 6
            }
        default:
            throw fail(.invalidEscape)
        }
    }

    /// Validates one multi-byte UTF-8 sequence (Unicode 15, table 3-7) starting at `index`.
    private mutating func scanUTF8Sequence() throws(JSONScanError) {
        let b0 = bytes[index]
        let length: Int
        var low: UInt8 = 0x80
        var high: UInt8 = 0xBF
        switch b0 {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; low = 0xA0  // no overlongs
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; high = 0x9F  // no UTF-8-encoded surrogates
        case 0xF0: length = 4; low = 0x90  // no overlongs
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; high = 0x8F  // nothing above U+10FFFF
        default: throw fail(.invalidUTF8)
        }
        guard index + length <= count else { throw fail(.invalidUTF8) }
        let b1 = bytes[index + 1]
        guard b1 >= low && b1 <= high else { throw fail(.invalidUTF8) }
        for k in 2..<max(length, 2) where bytes[index + k] & 0xC0 != 0x80 {
            throw fail(.invalidUTF8)
        }
        index += length
    }

    /// Reads four hex digits at `offset`, or `nil` if they are not there.
    static func hex4(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt16? {
        guard offset >= 0, offset + 4 <= bytes.count else { return nil }
        var value: UInt16 = 0
        for k in 0..<4 {
            let c = bytes[offset + k]
            let digit: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = c &- UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = c &- UInt8(ascii: "a") &+ 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = c &- UInt8(ascii: "A") &+ 10
            default: return nil
            }
            value = value << 4 | UInt16(digit)
        }
        return value
    }
}
