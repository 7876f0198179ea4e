// Byte-level JSON output helpers for ServerFrame. They append to a caller's [UInt8] so frames can be built after
// reserved headroom (LWS_PRE plus WebSocket header space) without a second copy.

/// JSON output primitives shared by the frame encoders and usable by other modules for small JSON documents
/// (GatewayCore's HTTP endpoints escape strings with ``appendString(_:to:)``).
public enum JSONWriter {
    /// Appends a compile-time ASCII fragment (the fixed parts of a frame, e.g. `{"type":"ack","id":`).
    @inline(__always) static func appendRaw(_ text: StaticString, to buffer: inout [UInt8]) {
        buffer.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// Appends `value` as a quoted, escaped JSON string.
    ///
    /// Escapes `"` and `\`, control characters below 0x20 (`\b \f \n \r \t` in short form, the rest as `\u00XX`), and
    /// U+2028/U+2029 (valid in JSON but line terminators in pre-ES2019 JavaScript, so a frame embedded in a script
    /// stays safe). All other UTF-8 passes through unchanged; runs of safe bytes are copied in bulk.
    /// - Parameters:
    ///   - value: The string to write.
    ///   - buffer: The buffer to append to.
    public static func appendString(_ value: String, to buffer: inout [UInt8]) {
        buffer.append(Byte.quote)
        var value = value
        // withUTF8 gives contiguous bytes; native Swift strings already are, so this does not copy.
        value.withUTF8 { utf8 in appendEscaped(utf8, to: &buffer) }
        buffer.append(Byte.quote)
    }

    /// Appends the UTF-8 bytes `utf8` as a quoted, escaped JSON string (as ``appendString(_:to:)`` does), without
    /// building a `String` first. The bytes must be valid UTF-8 (for example text a ``JSONScanner`` decoded).
    /// - Parameters:
    ///   - utf8: The string's UTF-8 bytes.
    ///   - buffer: The buffer to append to.
    public static func appendString(utf8: UnsafeRawBufferPointer, to buffer: inout [UInt8]) {
        buffer.append(Byte.quote)
        appendEscaped(utf8.assumingMemoryBound(to: UInt8.self), to: &buffer)
        buffer.append(Byte.quote)
    }

    static func appendEscaped(_ utf8: UnsafeBufferPointer<UInt8>, to buffer: inout [UInt8]) {
        let n = utf8.count
        var runStart = 0
        var i = 0
        while i < n {
            let c = utf8[i]
            // Fast path: printable ASCII other than the two specials, and UTF-8 bytes that cannot start U+2028/9.
            if c >= 0x20 && c != Byte.quote && c != Byte.backslash && c != 0xE2 {
                i += 1
                continue
            }
            if c == 0xE2 {
                // U+2028 is E2 80 A8, U+2029 is E2 80 A9.
                guard i + 2 < n, utf8[i + 1] == 0x80, utf8[i + 2] == 0xA8 || utf8[i + 2] == 0xA9 else {
                    i += 1
                    continue
                }
                buffer.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<i]))
                appendRaw(utf8[i + 2] == 0xA8 ? "\\u2028" : "\\u2029", to: &buffer)
                i += 3
                runStart = i
                continue
            }
            buffer.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<i]))
            switch c {
            case Byte.quote: appendRaw("\\\"", to: &buffer)
            case Byte.backslash: appendRaw("\\\\", to: &buffer)
            case 0x08: appendRaw("\\b", to: &buffer)
            case 0x0C: appendRaw("\\f", to: &buffer)
            case 0x0A: appendRaw("\\n", to: &buffer)
            case 0x0D: appendRaw("\\r", to: &buffer)
            case 0x09: appendRaw("\\t", to: &buffer)
            default:
                appendRaw("\\u00", to: &buffer)
                buffer.append(hexDigit(c >> 4))
                buffer.append(hexDigit(c & 0x0F))
            }
            i += 1
            runStart = i
        }
        buffer.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<n]))
    }

    @inline(__always) static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") &+ nibble : UInt8(ascii: "a") &+ (nibble &- 10)
    }

    /// Appends `value` in decimal.
    static func appendUInt(_ value: UInt64, to buffer: inout [UInt8]) {
        // 20 digits hold UInt64.max; digits are produced backwards into a fixed stack buffer, then copied once.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var v = value
            var i = 20
            repeat {
                i -= 1
                digits[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: v % 10)
                v /= 10
            } while v != 0
            buffer.append(contentsOf: UnsafeBufferPointer(rebasing: digits[i..<20]))
        }
    }

    /// Appends `value` in decimal, with a minus sign when negative.
    static func appendInt(_ value: Int64, to buffer: inout [UInt8]) {
        if value < 0 { buffer.append(UInt8(ascii: "-")) }
        appendUInt(value.magnitude, to: &buffer)
    }
}

/// Writes JSON into memory that was sized in advance (the event frame's hot path).
///
/// `Array.append` pays a uniqueness and capacity check per call; the event frame is a dozen pieces, so it is cheaper
/// to compute its exact length (``JSONWriter/escapedLength(_:)``), grow the array once and write through a pointer.
/// Callers must size exactly: every write method's byte count matches its length function.
struct RawJSONWriter {
    var pointer: UnsafeMutablePointer<UInt8>
    /// One past the last byte the writer may touch. Every write checks it in release builds too: the sizes come from
    /// ``JSONWriter/escapedLength(_:)``, and if that and the writer ever disagreed, a trap is the outcome, never a
    /// write out of bounds.
    let end: UnsafeMutablePointer<UInt8>

    init(pointer: UnsafeMutablePointer<UInt8>, end: UnsafeMutablePointer<UInt8>) {
        self.pointer = pointer
        self.end = end
    }

    /// Makes sure `n` more bytes fit (release builds included).
    @inline(__always) func reserve(_ n: Int) {
        precondition(n <= end - pointer, "JSON writer: \(n) bytes do not fit in the \(end - pointer) left (length mismatch)")
    }

    @inline(__always) mutating func raw(_ text: StaticString) {
        let n = text.utf8CodeUnitCount
        reserve(n)
        pointer.update(from: text.utf8Start, count: n)
        pointer += n
    }

    @inline(__always) mutating func bytes(_ data: UnsafeRawBufferPointer) {
        guard let base = data.baseAddress, data.count > 0 else { return }
        reserve(data.count)
        UnsafeMutableRawPointer(pointer).copyMemory(from: base, byteCount: data.count)
        pointer += data.count
    }

    @inline(__always) mutating func byte(_ b: UInt8) {
        reserve(1)
        pointer.pointee = b
        pointer += 1
    }

    /// Writes `value` quoted and escaped: exactly ``JSONWriter/escapedLength(_:)`` bytes.
    mutating func string(_ value: String) {
        var value = value
        value.withUTF8 { utf8 in
            byte(Byte.quote)
            let n = utf8.count
            var runStart = 0
            var i = 0
            while i < n {
                let c = utf8[i]
                if c >= 0x20 && c != Byte.quote && c != Byte.backslash && c != 0xE2 {
                    i += 1
                    continue
                }
                if c == 0xE2 {
                    guard i + 2 < n, utf8[i + 1] == 0x80, utf8[i + 2] == 0xA8 || utf8[i + 2] == 0xA9 else {
                        i += 1
                        continue
                    }
                    bytes(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: utf8[runStart..<i])))
                    raw(utf8[i + 2] == 0xA8 ? "\\u2028" : "\\u2029")
                    i += 3
                    runStart = i
                    continue
                }
                bytes(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: utf8[runStart..<i])))
                switch c {
                case Byte.quote: raw("\\\"")
                case Byte.backslash: raw("\\\\")
                case 0x08: raw("\\b")
                case 0x0C: raw("\\f")
                case 0x0A: raw("\\n")
                case 0x0D: raw("\\r")
                case 0x09: raw("\\t")
                default:
                    raw("\\u00")
                    byte(JSONWriter.hexDigit(c >> 4))
                    byte(JSONWriter.hexDigit(c & 0x0F))
                }
                i += 1
                runStart = i
            }
            bytes(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: utf8[runStart..<n])))
            byte(Byte.quote)
        }
    }

    /// Writes `value` in decimal: exactly ``JSONWriter/decimalLength(_:)`` bytes.
    mutating func uint(_ value: UInt64) {
        let n = JSONWriter.decimalLength(value)
        reserve(n)
        var v = value
        var i = n
        repeat {
            i -= 1
            pointer[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: v % 10)
            v /= 10
        } while i > 0
        pointer += n
    }
}

extension JSONWriter {
    /// The number of bytes ``RawJSONWriter/string(_:)`` writes for `value`, quotes included.
    static func escapedLength(_ value: String) -> Int {
        var value = value
        return value.withUTF8 { utf8 in
            var extra = 0
            let n = utf8.count
            var i = 0
            while i < n {
                let c = utf8[i]
                if c >= 0x20 && c != Byte.quote && c != Byte.backslash && c != 0xE2 {
                    i += 1
                    continue
                }
                if c == 0xE2 {
                    if i + 2 < n, utf8[i + 1] == 0x80, utf8[i + 2] == 0xA8 || utf8[i + 2] == 0xA9 {
                        extra += 3  // 3 UTF-8 bytes become the 6 bytes of \u2028
                        i += 3
                    } else {
                        i += 1
                    }
                    continue
                }
                switch c {
                case Byte.quote, Byte.backslash, 0x08, 0x0C, 0x0A, 0x0D, 0x09: extra += 1
                default: extra += 5  // \u00XX
                }
                i += 1
            }
            return n + extra + 2
        }
    }

    /// The number of decimal digits in `value`.
    @inline(__always) static func decimalLength(_ value: UInt64) -> Int {
        var n = 1
        var v = value
        while v >= 10 {
            v /= 10
            n += 1
        }
        return n
    }
}
