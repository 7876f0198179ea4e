// The on-disk format against docs/transcript-format.md: CRC32C vectors and the worked example's exact bytes.

import Foundation
import Testing
@testable import TranscriptLog

@Suite struct FormatTests {
    @Test func crc32cKnownVectors() {
        // RFC 3720 (iSCSI) appendix B.4 vectors and the "123456789" check value.
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum((0..<32).map { UInt8(31 - $0) }) == 0x113F_DB5C)
    }

    @Test func crc32cHardwareEqualsPortableAtEveryAlignmentAndLength() {
        // Both paths must agree bit for bit: a log written on one CPU is read on another.
        var rng = SeededGenerator(seed: 11)
        let data = (0..<4_200).map { _ in UInt8.random(in: 0...255, using: &rng) }
        data.withUnsafeBytes { all in
            for start in 0..<9 {
                for length in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1_000, 4_096, 4_191 - start] {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    let seed = UInt32(truncatingIfNeeded: start &* 2_654_435_761)
                    #expect(CRC32C.update(seed, slice) == CRC32C.softwareUpdate(seed, slice), "start \(start) length \(length)")
                }
            }
        }
    }

    @Test func crc32cSlicedEqualsBytewiseAtEveryAlignment() {
        var rng = SeededGenerator(seed: 7)
        let data = (0..<300).map { _ in UInt8.random(in: 0...255, using: &rng) }
        func bytewise(_ b: ArraySlice<UInt8>) -> UInt32 {
            var c: UInt32 = 0xFFFF_FFFF
            for x in b {
                c ^= UInt32(x)
                for _ in 0..<8 { c = (c >> 1) ^ ((c & 1) == 0 ? 0 : 0x82F6_3B78) }
            }
            return ~c
        }
        for start in 0..<9 {
            for end in stride(from: start, through: data.count, by: 13) {
                let slice = data[start..<end]
                let fast = slice.withUnsafeBytes { CRC32C.checksum($0) }
                #expect(fast == bytewise(slice), "start \(start) end \(end)")
            }
        }
    }

    /// The worked example of docs/transcript-format.md, produced by an independent Python CRC32C.
    @Test func workedExampleBytes() throws {
        let header = SegmentHeader(number: 1, createdMs: 1_767_225_600_000, maxRecord: 2 << 20, epoch: "5f0c2a9e13b47d68")
        let expectedHeader =
            "534b54524c4f470a0100000040000000010000000000000000a8da769b01000000002000356630633261396531336234376436380000000000000000241bef4b"
        #expect(hex(header.encoded()) == expectedHeader)
        var record: [UInt8] = []
        TranscriptFormat.appendEvent(
            AppendRequest(
                session: "s1", id: "m-1", kind: "chat.message", sub: "u42", role: "user", timestampMs: 1_767_225_600_123,
                data: Array("{\"text\":\"hi\"}".utf8)), seq: 1, to: &record)
        let expectedRecord =
            "a701380000000100000000000000dff787b3017ba8da769b010000020003000c000300040073316d2d31636861742e6d657373616765753432757365727b2274657874223a226869227d"
        #expect(hex(record) == expectedRecord)
        #expect(TranscriptFormat.segmentHeaderSize == 64)
        #expect(TranscriptFormat.recordHeaderSize == 18)
        // And it decodes back.
        let parsed = record.withUnsafeBytes { TranscriptFormat.parseRecord($0, fileRemaining: $0.count, maxRecord: 2 << 20) }
        guard case .valid(let layout) = parsed else {
            Issue.record("example record did not parse: \(parsed)")
            return
        }
        #expect(layout.seq == 1 && layout.size == 74 && layout.data == 61..<74)
    }

    @Test func segmentNamesRoundTripAndRejectOthers() {
        #expect(TranscriptFormat.segmentName(1) == "0000000000000001.tlog")
        #expect(TranscriptFormat.segmentNumber(fromName: "00000000000000ff.tlog") == 255)
        for bad in ["0000000000000000.tlog", "000000000000000G.tlog", "1.tlog", "0000000000000001.tlog.tmp", "LOCK",
            "00000000000000FF.tlog", "0000000100000000.tlog"]
        {
            #expect(TranscriptFormat.segmentNumber(fromName: bad) == nil, "\(bad)")
        }
    }

    func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

    /// Dedupe memory: an id is a 16-byte entry (fingerprint, seq), a 4-byte event second and a 4-byte index slot at
    /// most 3/4 and (after growth) at least 3/8 full, so at most 32 bytes per id at any fill.
    @Test func dedupeWindowMemoryPerID() {
        #expect(MemoryLayout<DedupeWindow.Entry>.stride == 16)
        var w = DedupeWindow(DedupePolicy(minIDs: 10_000, minSeconds: 300))
        var worst = 0.0
        for n in 1...200_000 {
            w.insert(DedupeKey(sub: "agent-1", id: "m-\(n)"), seq: UInt64(n), timestampMs: 1_700_000_000_000 + Int64(n))
            if n % 997 == 0 || n == 10_000 || n == 200_000 { worst = max(worst, Double(w.memoryBytes) / Double(w.count)) }
        }
        #expect(w.count == 200_000, "200 s of ids at 1,000/s: all inside the 300 s window")
        #expect(worst <= 32, "\(worst) bytes per id")
        // Lookups find every id, newest first for a shared fingerprint; a forgotten one is gone.
        #expect(w.candidates(DedupeKey(sub: "agent-1", id: "m-1").fingerprint) == [1])
        #expect(w.candidates(DedupeKey(sub: "agent-1", id: "m-200000").fingerprint) == [200_000])
        var small = DedupeWindow(DedupePolicy(minIDs: 3, minSeconds: 0))
        for n in 1...10 { small.insert(DedupeKey(sub: "a", id: "\(n)"), seq: UInt64(n), timestampMs: Int64(n) * 1000) }
        #expect(small.count == 3)
        #expect(small.candidates(DedupeKey(sub: "a", id: "7").fingerprint).isEmpty)
        #expect(small.candidates(DedupeKey(sub: "a", id: "8").fingerprint) == [8])
    }
}
