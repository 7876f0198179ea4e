// Byte layout of segments and records. See ../../docs/transcript-format.md for more detail: every
// constant below is defined there, and the test `workedExampleBytes` pins the encoder to that document.

/// Layout constants and the pure encode/decode functions of the on-disk format.
enum TranscriptFormat {
    // MARK: Directory ("Directory")

    /// Segment file suffix: `<16 hex digits>.tlog`.
    static let segmentSuffix = ".tlog"
    /// A segment being created; removed at open.
    static let temporarySuffix = ".tlog.tmp"
    /// The writer's lock file.
    static let lockFileName = "LOCK"
    /// A sealed segment's index checkpoint: `<16 hex digits>.tidx` ("Index checkpoints").
    static let checkpointSuffix = ".tidx"
    /// Appended to a checkpoint's name while it is written (`N.tidx.tmp`); removed at open.
    static let checkpointTemporaryTail = ".tmp"
    /// The space retention keeps for its head markers ("Retention and head markers").
    static let reserveFileName = "RESERVE"
    /// Hex digits in a segment number.
    static let segmentNameDigits = 16

    // MARK: Segment header ("Segment header")

    /// "SKTRLOG\n".
    static let segmentMagic: [UInt8] = [0x53, 0x4B, 0x54, 0x52, 0x4C, 0x4F, 0x47, 0x0A]
    static let segmentVersion: UInt32 = 1
    /// magic + version + header_size + segment_number + created_ms + max_record + epoch + reserved + header_crc.
    static let segmentHeaderSize = 8 + 4 + 4 + 8 + 8 + 4 + 16 + 8 + 4
    static let segmentHeaderCRCOffset = segmentHeaderSize - 4
    /// The epoch is 16 lowercase hex characters.
    static let epochLength = 16

    // MARK: Record ("Record")

    static let recordMagic: UInt8 = 0xA7
    static let recordVersion: UInt8 = 0x01
    /// magic + version + length + seq + crc.
    static let recordHeaderSize = 1 + 1 + 4 + 8 + 4
    /// The CRC covers the 14 header bytes before it, then the payload.
    static let recordCRCOffset = 1 + 1 + 4 + 8
    /// type + timestamp_ms + five u16 string lengths.
    static let eventFixedSize = 1 + 8 + 5 * 2
    /// type + timestamp_ms + session_len.
    static let markerFixedSize = 1 + 8 + 2
    /// The smallest valid payload (a head marker with an empty session name).
    static let minPayload = markerFixedSize
    static let typeEvent: UInt8 = 1
    static let typeHeadMarker: UInt8 = 2

    // MARK: Bounds

    /// The largest `max_record` a header may declare: a bound on allocation even for a damaged-but-CRC-valid header.
    static let maxRecordLimit = 256 << 20
    /// `segmentMaxBytes` and one batch are each at most 1 GiB, so an offset always fits the index's 32 bits.
    static let maxSegmentBytes = 1 << 30
    static let maxBatchBytes = 1 << 30
    /// Strings carry u16 lengths.
    static let maxStringBytes = Int(UInt16.max)

    static func segmentName(_ number: UInt32) -> String {
        let hex = String(number, radix: 16)
        return String(repeating: "0", count: segmentNameDigits - hex.count) + hex + segmentSuffix
    }

    /// The number in a segment file name, nil for any other name.
    static func segmentNumber(fromName name: String) -> UInt32? { number(fromName: name, suffix: segmentSuffix) }

    /// The segment number in a checkpoint file name, nil for any other name.
    static func checkpointNumber(fromName name: String) -> UInt32? { number(fromName: name, suffix: checkpointSuffix) }

    private static func number(fromName name: String, suffix: String) -> UInt32? {
        guard name.hasSuffix(suffix) else { return nil }
        let digits = name.utf8.prefix(name.utf8.count - suffix.utf8.count)
        guard digits.count == segmentNameDigits,
            digits.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }),
            let value = UInt64(String(decoding: digits, as: UTF8.self), radix: 16),
            value >= 1, value <= UInt64(UInt32.max)
        else { return nil }
        return UInt32(value)
    }
}

/// A decoded segment header.
struct SegmentHeader: Equatable {
    var number: UInt32
    var createdMs: Int64
    var maxRecord: Int
    var epoch: String

    /// The header's `header_crc`: identifies the segment (number, creation time, bound, epoch) in its checkpoint.
    var crc: UInt32 { encoded().withUnsafeBytes { $0.loadLE(UInt32.self, at: TranscriptFormat.segmentHeaderCRCOffset) } }

    func encoded() -> [UInt8] {
        var b: [UInt8] = []
        b.reserveCapacity(TranscriptFormat.segmentHeaderSize)
        b.append(contentsOf: TranscriptFormat.segmentMagic)
        b.appendLE(TranscriptFormat.segmentVersion)
        b.appendLE(UInt32(TranscriptFormat.segmentHeaderSize))
        b.appendLE(UInt64(number))
        b.appendLE(UInt64(bitPattern: createdMs))
        b.appendLE(UInt32(maxRecord))
        b.append(contentsOf: epoch.utf8)
        b.append(contentsOf: repeatElement(0, count: 8))
        assert(b.count == TranscriptFormat.segmentHeaderCRCOffset, "header layout drifted from the doc")
        b.appendLE(CRC32C.checksum(b))
        return b
    }

    /// Decodes and checks a header; nil with a reason if any field is wrong.
    static func decode(_ p: UnsafeRawBufferPointer) -> (header: SegmentHeader?, reason: String) {
        typealias F = TranscriptFormat
        guard p.count >= F.segmentHeaderSize else { return (nil, "segment header truncated") }
        guard p.prefix(8).elementsEqual(F.segmentMagic) else { return (nil, "bad segment magic") }
        let storedCRC = p.loadLE(UInt32.self, at: F.segmentHeaderCRCOffset)
        guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[0..<F.segmentHeaderCRCOffset])) == storedCRC else {
            return (nil, "segment header checksum mismatch")
        }
        guard p.loadLE(UInt32.self, at: 8) == F.segmentVersion else { return (nil, "unknown segment version") }
        guard p.loadLE(UInt32.self, at: 12) == UInt32(F.segmentHeaderSize) else { return (nil, "bad header size") }
        let number = p.loadLE(UInt64.self, at: 16)
        let created = Int64(bitPattern: p.loadLE(UInt64.self, at: 24))
        let maxRecord = Int(p.loadLE(UInt32.self, at: 32))
        let epochBytes = p[36..<(36 + F.epochLength)]
        guard number >= 1, number <= UInt64(UInt32.max) else { return (nil, "bad segment number") }
        guard maxRecord >= F.minPayload, maxRecord <= F.maxRecordLimit else { return (nil, "bad max_record") }
        guard epochBytes.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else {
            return (nil, "bad epoch")
        }
        let epoch = String(decoding: epochBytes, as: UTF8.self)
        return (SegmentHeader(number: UInt32(number), createdMs: created, maxRecord: maxRecord, epoch: epoch), "")
    }
}

/// Where the fields of one valid record lie, relative to the record's first byte.
struct RecordLayout {
    var type: UInt8
    var seq: UInt64
    /// Header plus payload.
    var size: Int
    var timestampMs: Int64
    var session: Range<Int>
    var id: Range<Int>
    var kind: Range<Int>
    var sub: Range<Int>
    var role: Range<Int>
    var data: Range<Int>
}

/// The verdict on the bytes at one offset.
enum RecordParse {
    case valid(RecordLayout)
    case invalid(String)
    /// The record is complete in the file but only part of it is in the buffer: read this many bytes.
    case needBytes(Int)
}

extension TranscriptFormat {
    /// Checks the record starting at `p[0]`.
    /// - Parameters:
    ///   - p: bytes from the record's start (possibly fewer than the record).
    ///   - fileRemaining: bytes from the record's start to the end of the file (or of the committed region).
    ///   - maxRecord: the segment's payload bound.
    static func parseRecord(_ p: UnsafeRawBufferPointer, fileRemaining: Int, maxRecord: Int) -> RecordParse {
        let h = recordHeaderSize
        if p.count < h {
            return fileRemaining < h ? .invalid("truncated record header") : .needBytes(h)
        }
        guard p[0] == recordMagic else { return .invalid("bad record magic") }
        guard p[1] == recordVersion else { return .invalid("bad record version") }
        let length = Int(p.loadLE(UInt32.self, at: 2))
        guard length >= minPayload, length <= maxRecord else { return .invalid("record length out of bounds") }
        let size = h + length
        guard size <= fileRemaining else { return .invalid("truncated record") }
        guard size <= p.count else { return .needBytes(size) }
        let stored = p.loadLE(UInt32.self, at: recordCRCOffset)
        let crc = CRC32C.update(
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[0..<recordCRCOffset])),
            UnsafeRawBufferPointer(rebasing: p[h..<size]))
        guard crc == stored else { return .invalid("checksum mismatch") }
        let seq = p.loadLE(UInt64.self, at: 6)
        let type = p[h]
        let ts = Int64(bitPattern: p.loadLE(UInt64.self, at: h + 1))
        if type == typeHeadMarker {
            let sessionLen = Int(p.loadLE(UInt16.self, at: h + 9))
            guard length == markerFixedSize + sessionLen else { return .invalid("bad head marker length") }
            let s = (h + markerFixedSize)..<size
            let empty = size..<size
            return .valid(
                RecordLayout(
                    type: type, seq: seq, size: size, timestampMs: ts, session: s, id: empty, kind: empty,
                    sub: empty, role: empty, data: empty))
        }
        guard type == typeEvent, length >= eventFixedSize else { return .invalid("bad record type") }
        // Five u16 lengths; their sum must fit the payload (no allocation: this runs once per scanned record).
        let base = h + 9
        let l0 = Int(p.loadLE(UInt16.self, at: base))
        let l1 = Int(p.loadLE(UInt16.self, at: base + 2))
        let l2 = Int(p.loadLE(UInt16.self, at: base + 4))
        let l3 = Int(p.loadLE(UInt16.self, at: base + 6))
        let l4 = Int(p.loadLE(UInt16.self, at: base + 8))
        guard eventFixedSize + l0 + l1 + l2 + l3 + l4 <= length else { return .invalid("string length beyond record") }
        let s0 = h + eventFixedSize
        let s1 = s0 + l0
        let s2 = s1 + l1
        let s3 = s2 + l2
        let s4 = s3 + l3
        let d = s4 + l4
        return .valid(
            RecordLayout(
                type: type, seq: seq, size: size, timestampMs: ts, session: s0..<s1, id: s1..<s2,
                kind: s2..<s3, sub: s3..<s4, role: s4..<d, data: d..<size))
    }

    /// Appends one event record to `buffer` (header, payload, CRC). The caller checked the string and payload bounds.
    static func appendEvent(_ r: AppendRequest, seq: UInt64, to buffer: inout [UInt8]) {
        let start = buffer.count
        buffer.append(recordMagic)
        buffer.append(recordVersion)
        buffer.appendLE(UInt32(0))  // length, patched below
        buffer.appendLE(seq)
        buffer.appendLE(UInt32(0))  // crc, patched below
        buffer.append(typeEvent)
        buffer.appendLE(UInt64(bitPattern: r.timestampMs))
        buffer.appendLE(UInt16(r.session.utf8.count))
        buffer.appendLE(UInt16(r.id.utf8.count))
        buffer.appendLE(UInt16(r.kind.utf8.count))
        buffer.appendLE(UInt16(r.sub.utf8.count))
        buffer.appendLE(UInt16(r.role.utf8.count))
        buffer.append(contentsOf: r.session.utf8)
        buffer.append(contentsOf: r.id.utf8)
        buffer.append(contentsOf: r.kind.utf8)
        buffer.append(contentsOf: r.sub.utf8)
        buffer.append(contentsOf: r.role.utf8)
        buffer.append(contentsOf: r.data)
        sealRecord(&buffer, start: start)
    }

    /// Appends a head marker (type 2) for `session` with `seq` = its head.
    static func appendHeadMarker(session: String, head: UInt64, timestampMs: Int64, to buffer: inout [UInt8]) {
        let start = buffer.count
        buffer.append(recordMagic)
        buffer.append(recordVersion)
        buffer.appendLE(UInt32(0))
        buffer.appendLE(head)
        buffer.appendLE(UInt32(0))
        buffer.append(typeHeadMarker)
        buffer.appendLE(UInt64(bitPattern: timestampMs))
        buffer.appendLE(UInt16(session.utf8.count))
        buffer.append(contentsOf: session.utf8)
        sealRecord(&buffer, start: start)
    }

    /// Patches `length` and `crc` of the record that starts at `start` and runs to the buffer's end.
    private static func sealRecord(_ buffer: inout [UInt8], start: Int) {
        let length = UInt32(buffer.count - start - recordHeaderSize)
        buffer.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: length.littleEndian, toByteOffset: start + 2, as: UInt32.self)
            let crc = CRC32C.update(
                CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[start..<(start + recordCRCOffset)])),
                UnsafeRawBufferPointer(rebasing: raw[(start + recordHeaderSize)...]))
            raw.storeBytes(of: crc.littleEndian, toByteOffset: start + recordCRCOffset, as: UInt32.self)
        }
    }

    /// Payload bytes an event will take (for the bound check before encoding).
    static func eventPayloadSize(_ r: AppendRequest) -> Int {
        eventFixedSize + r.session.utf8.count + r.id.utf8.count + r.kind.utf8.count + r.sub.utf8.count
            + r.role.utf8.count + r.data.count
    }
}

extension Array where Element == UInt8 {
    @inline(__always)
    mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}

extension UnsafeRawBufferPointer {
    @inline(__always)
    func loadLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
