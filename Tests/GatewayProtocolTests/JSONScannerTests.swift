import GatewayProtocol
import Testing

/// Scans a string's UTF-8 bytes with the given limits.
func scan(_ text: String, maxDepth: Int = 64, maxMembers: Int = 256) -> Result<JSONObject, JSONScanError> {
    JSONScanner(maxDepth: maxDepth, maxMembers: maxMembers).scanObject(Array(text.utf8))
}

/// Scans raw bytes with default limits.
func scan(bytes: [UInt8]) -> Result<JSONObject, JSONScanError> {
    JSONScanner().scanObject(bytes)
}

/// The reason of a failed scan, or nil when it succeeded.
func reason(_ result: Result<JSONObject, JSONScanError>) -> JSONScanError.Reason? {
    if case .failure(let error) = result { return error.reason }
    return nil
}

extension JSONObject {
    /// Looks a member up in the array that was scanned.
    func member(_ key: String, in bytes: [UInt8]) -> JSONMember? {
        bytes.withUnsafeBytes { member(key, in: $0) }
    }
}

/// Decodes the string value of the single member `v` in `{"v":<literal>}`.
func decodedString(_ literal: String) -> String? {
    let bytes = Array("{\"v\":\(literal)}".utf8)
    guard case .success(let object) = JSONScanner().scanObject(bytes), let member = object.member("v", in: bytes) else { return nil }
    return bytes.withUnsafeBytes { JSONScanner.decodeString($0, range: member.range) }
}

@Suite("JSONScanner")
struct JSONScannerTests {
    @Test(
        "accepts well-formed objects",
        arguments: [
            "{}",
            " \t\r\n{ } \n",
            #"{"a":1}"#,
            #"{"a":"b","c":[1,2,{"d":null}],"e":{"f":true,"g":false},"h":[],"i":{}}"#,
            #"{ "a" : [ 1 , 2 ] , "b" : { "c" : "d" } }"#,
            #"{"s":"\"\\\/\b\f\n\r\t\u0041\u00e9\uD83D\uDE00"}"#,
            #"{"u":"é日本😀"}"#,
            #"{"k":"\u0000"}"#,
            #"{"":""}"#,
        ]
    )
    func acceptsValid(_ text: String) {
        #expect(reason(scan(text)) == nil)
    }

    @Test("reports members with types and exact raw ranges")
    func memberRanges() throws {
        let text = #"{ "s" : "x\n" , "n":-1.5e3,"b":true,"z":null,"a":[ 1 ],"o":{"k" : 2} }"#
        let bytes = Array(text.utf8)
        let object = try JSONScanner().scanObject(bytes).get()
        let expected: [(String, JSONValueType, String)] = [
            ("s", .string, #""x\n""#), ("n", .number, "-1.5e3"), ("b", .bool, "true"), ("z", .null, "null"),
            ("a", .array, "[ 1 ]"), ("o", .object, #"{"k" : 2}"#),
        ]
        #expect(object.members.count == expected.count)
        for (member, (key, type, raw)) in zip(object.members, expected) {
            #expect(bytes.withUnsafeBytes { member.key(in: $0) } == key)
            #expect(member.type == type)
            #expect(String(decoding: bytes[member.range], as: UTF8.self) == raw)
        }
        #expect(object.member("o", in: bytes)?.type == .object)
        #expect(object.member("missing", in: bytes) == nil)
    }

    @Test(
        "rejects a top level that is not one object",
        arguments: [
            ("", JSONScanError.Reason.unexpectedEnd),
            ("   ", .unexpectedEnd),
            ("[]", .expectedObject),
            (#""s""#, .expectedObject),
            ("1", .expectedObject),
            ("null", .expectedObject),
            ("{}x", .trailingGarbage),
            ("{}{}", .trailingGarbage),
            ("{} ,", .trailingGarbage),
            ("{}\u{0}", .trailingGarbage),
        ]
    )
    func rejectsTopLevel(_ text: String, _ expected: JSONScanError.Reason) {
        #expect(reason(scan(text)) == expected)
    }

    @Test(
        "rejects structural errors",
        arguments: [
            (#"{"a"}"#, JSONScanError.Reason.expectedColon),
            (#"{"a":}"#, .unexpectedByte(UInt8(ascii: "}"))),
            (#"{"a":1,}"#, .expectedKey),
            ("{,}", .expectedKey),
            (#"{"a" 1}"#, .expectedColon),
            ("{a:1}", .expectedKey),
            (#"{'a':1}"#, .expectedKey),
            (#"{"a":[1,]}"#, .unexpectedByte(UInt8(ascii: "]"))),
            (#"{"a":[1 2]}"#, .expectedCommaOrClose),
            (#"{"a":{"b"}}"#, .expectedColon),
            (#"{"a":{"b":1,}}"#, .expectedKey),
            (#"{"a":[}"#, .unexpectedByte(UInt8(ascii: "}"))),
            (#"{"a":[1}"#, .expectedCommaOrClose),
            (#"{"a":{]}"#, .expectedKey),
            (#"{"a":"b"#, .unexpectedEnd),
            (#"{"a":1"#, .unexpectedEnd),
            (#"{"a":[[[1]]"#, .unexpectedEnd),
            (#"{"a":1 "b":2}"#, .expectedCommaOrClose),
            (#"{"a":truex}"#, .invalidLiteral),
            (#"{"a":tru}"#, .invalidLiteral),
            (#"{"a":nul}"#, .invalidLiteral),
            (#"{"a":True}"#, .invalidLiteral),
            (#"{"a":undefined}"#, .invalidLiteral),
            ("{\"a\":\u{0B}1}", .unexpectedByte(0x0B)),  // vertical tab is not JSON whitespace
            ("{\"a\":\u{A0}1}", .unexpectedByte(0xC2)),  // nor is NBSP
        ]
    )
    func rejectsStructure(_ text: String, _ expected: JSONScanError.Reason) {
        #expect(reason(scan(text)) == expected)
    }

    @Test(
        "accepts RFC 8259 numbers",
        arguments: [
            "0", "-0", "1", "-1", "10", "1.5", "-0.5", "0.0", "1e10", "1E+2", "1e-2", "-0.5e-3", "0e0",
            "123456789012345678901234567890", "1.7976931348623157e308",
        ]
    )
    func acceptsNumbers(_ number: String) throws {
        let bytes = Array(#"{"n":\#(number)}"#.utf8)
        let object = try JSONScanner().scanObject(bytes).get()
        #expect(object.member("n", in: bytes)?.type == .number)
        #expect(object.member("n", in: bytes)?.range.count == number.utf8.count)
    }

    @Test(
        "rejects malformed numbers, NaN and Infinity",
        arguments: [
            ("01", JSONScanError.Reason.invalidNumber), ("-01", .invalidNumber), ("00", .invalidNumber),
            ("1.", .invalidNumber), ("1.e3", .invalidNumber), ("1e", .invalidNumber), ("1e+", .invalidNumber),
            ("-", .invalidNumber), ("--1", .invalidNumber), ("-a", .invalidNumber),
            ("+1", .unexpectedByte(UInt8(ascii: "+"))), (".5", .unexpectedByte(UInt8(ascii: "."))),
            ("0x1", .expectedCommaOrClose), ("1_000", .expectedCommaOrClose),
            ("NaN", .invalidLiteral), ("Infinity", .invalidLiteral), ("-Infinity", .invalidNumber),
        ]
    )
    func rejectsNumbers(_ number: String, _ expected: JSONScanError.Reason) {
        #expect(reason(scan(#"{"n":\#(number)}"#)) == expected)
    }

    @Test(
        "rejects invalid escapes",
        arguments: [#"\x41"#, #"\'"#, #"\a"#, #"\0"#, #"\U0041"#, #"\u12"#, #"\u12G4"#, #"\u"#, #"\ "#]
    )
    func rejectsInvalidEscapes(_ escape: String) {
        #expect(reason(scan(#"{"s":"\#(escape)"}"#)) == .invalidEscape)
    }

    @Test(
        "rejects lone and mismatched surrogates",
        arguments: [#"\uD800"#, #"\uDC00"#, #"\uDFFF"#, #"\uD800\u0041"#, #"\uD800x"#, #"\uDBFF\uDBFF"#, #"\uDE00\uD83D"#]
    )
    func rejectsLoneSurrogates(_ escape: String) {
        #expect(reason(scan(#"{"s":"\#(escape)"}"#)) == .loneSurrogate)
    }

    @Test(
        "decodes escapes and surrogate pairs",
        arguments: [
            (#""plain""#, "plain"),
            (#""a\"b\\c\/d""#, "a\"b\\c/d"),
            (#""\b\f\n\r\t""#, "\u{8}\u{C}\n\r\t"),
            (#""\u0041\u00e9\u00E9""#, "Aéé"),
            (#""\u65e5\u672c""#, "日本"),
            (#""\uD83D\uDE00""#, "😀"),
            (#""\uDBFF\uDFFF""#, "\u{10FFFF}"),
            (#""x\u0000y""#, "x\u{0}y"),
            (#""\u2028""#, "\u{2028}"),
            (#""é😀""#, "é😀"),
            (#""""#, ""),
        ]
    )
    func decodesStrings(_ literal: String, _ expected: String) {
        #expect(decodedString(literal) == expected)
    }

    @Test("rejects raw control characters and NUL bytes in strings", arguments: Array(UInt8(0)..<0x20))
    func rejectsControlCharacters(_ byte: UInt8) {
        let bytes = Array(#"{"s":"a"#.utf8) + [byte] + Array(#"b"}"#.utf8)
        #expect(reason(scan(bytes: bytes)) == .controlCharacter(byte))
    }

    @Test("rejects a NUL byte outside strings")
    func rejectsNulOutsideStrings() {
        #expect(reason(scan(bytes: Array(#"{"a":"#.utf8) + [0] + Array("1}".utf8))) == .unexpectedByte(0))
        #expect(reason(scan(bytes: [0])) == .expectedObject)
    }

    @Test(
        "rejects invalid UTF-8 inside strings",
        arguments: [
            [0xC0, 0x80],  // overlong NUL
            [0xC1, 0xBF],  // overlong
            [0xE0, 0x80, 0x80],  // overlong
            [0xED, 0xA0, 0x80],  // UTF-8-encoded surrogate U+D800
            [0xF4, 0x90, 0x80, 0x80],  // above U+10FFFF
            [0xF5, 0x80, 0x80, 0x80],
            [0x80],  // lone continuation byte
            [0xE2, 0x82],  // truncated sequence
            [0xE2, 0x28, 0xA1],  // bad continuation
            [0xFF],
        ] as [[UInt8]]
    )
    func rejectsInvalidUTF8(_ sequence: [UInt8]) {
        let bytes = Array(#"{"s":"a"#.utf8) + sequence + Array(#"b"}"#.utf8)
        #expect(reason(scan(bytes: bytes)) == .invalidUTF8)
    }

    @Test("accepts the UTF-8 boundary scalars")
    func acceptsUTF8Boundaries() {
        for scalar in ["\u{80}", "\u{7FF}", "\u{800}", "\u{D7FF}", "\u{E000}", "\u{FFFF}", "\u{10000}", "\u{10FFFF}"] {
            #expect(decodedString("\"\(scalar)\"") == scalar)
        }
    }

    @Test("rejects duplicate top-level keys, also when spelled with escapes")
    func rejectsDuplicateKeys() {
        #expect(reason(scan(#"{"a":1,"a":2}"#)) == .duplicateKey("a"))
        #expect(reason(scan(#"{"id":"x","type":"ping","id":"y"}"#)) == .duplicateKey("id"))
        #expect(reason(scan(#"{"id":1,"\u0069d":2}"#)) == .duplicateKey("id"))
        // Nested duplicates belong to opaque data and are forwarded, not judged.
        #expect(reason(scan(#"{"data":{"a":1,"a":2}}"#)) == nil)
    }

    @Test("finds duplicates among many keys (set path) and accepts many distinct keys")
    func duplicatesAmongManyKeys() {
        let distinct = (0..<200).map { "\"k\($0)\":\($0)" }.joined(separator: ",")
        #expect(reason(scan("{\(distinct)}")) == nil)
        #expect(reason(scan("{\(distinct),\"k7\":0}")) == .duplicateKey("k7"))
        #expect(reason(scan("{\(distinct),\"k199\":0}")) == .duplicateKey("k199"))
    }

    @Test("limits the number of top-level members")
    func memberLimit() {
        let members = (0..<10).map { "\"k\($0)\":0" }.joined(separator: ",")
        #expect(reason(scan("{\(members)}", maxMembers: 10)) == nil)
        #expect(reason(scan("{\(members),\"x\":1}", maxMembers: 10)) == .tooManyMembers)
    }

    /// `{"a":` + depth-1 nested arrays + `}`: total nesting depth `depth`, counting the top-level object
    /// (`{"a":0}` for depth 1).
    static func nested(depth: Int) -> [UInt8] {
        let inner: [UInt8] = depth > 1
            ? [UInt8](repeating: UInt8(ascii: "["), count: depth - 1) + [UInt8](repeating: UInt8(ascii: "]"), count: depth - 1)
            : [UInt8(ascii: "0")]
        return Array(#"{"a":"#.utf8) + inner + [UInt8(ascii: "}")]
    }

    /// `depth` nested objects, the innermost empty: `{"a":{"a":{}}}` has depth 3.
    static func nestedObjects(depth: Int) -> [UInt8] {
        Array(repeating: Array(#"{"a":"#.utf8), count: depth - 1).flatMap { $0 } + Array("{}".utf8)
            + [UInt8](repeating: UInt8(ascii: "}"), count: depth - 1)
    }

    @Test("enforces the default depth limit of 64 exactly")
    func defaultDepth() {
        #expect(reason(scan(bytes: Self.nested(depth: 64))) == nil)
        #expect(reason(scan(bytes: Self.nested(depth: 65))) == .tooDeep)
        // Objects count like arrays.
        #expect(reason(scan(bytes: Self.nestedObjects(depth: 64))) == nil)
        #expect(reason(scan(bytes: Self.nestedObjects(depth: 65))) == .tooDeep)
    }

    @Test("depth limit is configurable", arguments: [1, 2, 3, 10])
    func configurableDepth(_ limit: Int) {
        #expect(reason(scan(String(decoding: Self.nested(depth: limit), as: UTF8.self), maxDepth: limit)) == nil)
        #expect(reason(scan(String(decoding: Self.nested(depth: limit + 1), as: UTF8.self), maxDepth: limit)) == .tooDeep)
        // Scalars never count as depth: a flat object passes even with maxDepth 1.
        #expect(reason(scan(#"{"a":1,"b":"x"}"#, maxDepth: 1)) == nil)
    }

    @Test("10,000-deep nesting is rejected without recursion; the scanner also walks it when allowed")
    func deepNesting() {
        let deep = Self.nested(depth: 10_000)
        #expect(reason(scan(bytes: deep)) == .tooDeep)
        // An iterative walk handles any depth: with the limit raised, 200,000 levels scan fine on a thread stack.
        let deeper = Self.nested(depth: 200_000)
        #expect(reason(JSONScanner(maxDepth: 200_000).scanObject(deeper)) == nil)
        // Unbalanced deep input ends as an error, not a crash.
        #expect(reason(JSONScanner(maxDepth: 200_000).scanObject(Array(deeper.prefix(150_000)))) == .unexpectedEnd)
    }

    @Test("scans and decodes a 1 MB string field")
    func megabyteString() throws {
        let big = String(repeating: "abcdefghij", count: 100_000) + "é\\n"
        let bytes = Array(#"{"type":"publish","big":"\#(big)"}"#.utf8)
        let object = try JSONScanner().scanObject(bytes).get()
        let member = try #require(object.member("big", in: bytes))
        #expect(member.range.count == big.utf8.count + 2)
        let decoded = bytes.withUnsafeBytes { JSONScanner.decodeString($0, range: member.range) }
        #expect(decoded?.utf8.count == 1_000_000 + 2 + 1)
        #expect(decoded?.hasSuffix("é\n") == true)
    }

    @Test(
        "decodes non-negative integers and reports why others fail",
        arguments: [
            ("0", Result<UInt64, JSONIntegerError>.success(0)),
            ("-0", .success(0)),
            ("7", .success(7)),
            ("18446744073709551615", .success(UInt64.max)),
            ("18446744073709551616", .failure(.overflow)),
            ("99999999999999999999999", .failure(.overflow)),
            ("-1", .failure(.negative)),
            ("-18446744073709551616", .failure(.negative)),
            ("1.0", .failure(.notAnInteger)),
            ("1.5", .failure(.notAnInteger)),
            ("1e3", .failure(.notAnInteger)),
            ("-1e3", .failure(.notAnInteger)),
            ("0E0", .failure(.notAnInteger)),
        ]
    )
    func decodesIntegers(_ number: String, _ expected: Result<UInt64, JSONIntegerError>) throws {
        let bytes = Array(#"{"n":\#(number)}"#.utf8)
        let member = try #require(try JSONScanner().scanObject(bytes).get().member("n", in: bytes))
        #expect(bytes.withUnsafeBytes { JSONScanner.decodeUInt64($0, range: member.range) } == expected)
    }

    @Test("decodeString and decodeUInt64 are safe on arbitrary ranges")
    func decodersRejectBadRanges() {
        // Offsets: the string "ab\n" is 5..<11, the number 12 is 16..<18.
        let bytes = Array(#"{"s":"ab\n","n":12}"#.utf8)
        bytes.withUnsafeBytes { raw in
            for lower in -2...(bytes.count + 2) {
                for upper in lower...(bytes.count + 3) {
                    // Must not trap on any range; only digit runs can decode as integers.
                    _ = JSONScanner.decodeString(raw, range: lower..<upper)
                    if case .success(let v) = JSONScanner.decodeUInt64(raw, range: lower..<upper) {
                        #expect([16..<17, 17..<18, 16..<18].contains(lower..<upper))
                        #expect(v == 12 || v == 1 || v == 2)
                    }
                }
            }
            #expect(JSONScanner.decodeString(raw, range: 5..<11) == "ab\n")
            #expect(JSONScanner.decodeString(raw, range: 5..<10) == nil)
            #expect(JSONScanner.decodeString(raw, range: 6..<11) == nil)
            #expect(JSONScanner.decodeUInt64(raw, range: 16..<18) == .success(12))
            #expect(JSONScanner.decodeUInt64(raw, range: 15..<18) == .failure(.notANumber))
        }
    }

    @Test("error descriptions name the problem and the offset")
    func errorDescription() throws {
        guard case .failure(let error) = scan(#"{"a":01}"#) else {
            Issue.record("expected failure")
            return
        }
        #expect(error.offset == 6)
        #expect(error.description == "invalid number at byte 6")
    }
}
