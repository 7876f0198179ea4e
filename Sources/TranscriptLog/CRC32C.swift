// CRC32C (Castagnoli), the checksum of every record and segment header (docs/transcript-format.md).
// On x86-64 with SSE4.2 the CPU's crc32 instruction computes it (CCRC32C, ~10x faster: recovery of a large log is
// CRC-bound); elsewhere the portable code below runs. Slicing-by-8: eight 256-entry tables let the loop fold 8 input bytes per step with 8 independent
// table loads instead of 8 dependent ones, which is what makes a portable Swift CRC run near 2 GB/s.

import CCRC32C

/// The CRC32C checksum: reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF.
public enum CRC32C {
    /// Reflected Castagnoli polynomial.
    static let polynomial: UInt32 = 0x82F6_3B78

    /// `tables[k * 256 + b]`: CRC contribution of byte `b` followed by `k` zero bytes.
    static let tables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c >> 1) ^ ((c & 1) == 0 ? 0 : polynomial) }
            t[i] = c
        }
        for k in 1..<8 {
            for i in 0..<256 {
                let prev = t[(k - 1) * 256 + i]
                t[k * 256 + i] = (prev >> 8) ^ t[Int(prev & 0xFF)]
            }
        }
        return t
    }()

    /// CRC32C of `bytes`.
    /// - Parameter bytes: the data.
    /// - Returns: the finished (post-xored) checksum.
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        update(0, bytes)
    }

    /// Continues a finished checksum `crc` over more `bytes` (`update(checksum(a), b) == checksum(a + b)`).
    /// - Parameters:
    ///   - crc: a finished checksum, 0 for an empty prefix.
    ///   - bytes: the data that follows.
    /// - Returns: the finished checksum of the concatenation.
    public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress else { return crc }
        if usesHardware { return ~ccrc32c_hw_update(~crc, base, bytes.count) }
        return softwareUpdate(crc, bytes)
    }

    /// Whether checksums use the CPU's crc32 instruction (x86-64 SSE4.2) instead of the portable code.
    public static let usesHardware = ccrc32c_hw_available() == 1

    /// The portable implementation of ``update(_:_:)`` (slicing-by-8).
    static func softwareUpdate(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var c = ~crc
        guard let base = bytes.baseAddress else { return crc }
        let count = bytes.count
        tables.withUnsafeBufferPointer { tp in
            let t = tp.baseAddress.unsafelyUnwrapped
            var i = 0
            // Byte-wise until the pointer is 8-byte aligned, so the main loop's loads are aligned.
            while i < count, (Int(bitPattern: base) &+ i) & 7 != 0 {
                c = (c >> 8) ^ t[Int((c ^ UInt32(base.load(fromByteOffset: i, as: UInt8.self))) & 0xFF)]
                i &+= 1
            }
            while i &+ 8 <= count {
                let word = UInt64(littleEndian: base.load(fromByteOffset: i, as: UInt64.self))
                let lo = c ^ UInt32(truncatingIfNeeded: word)
                let hi = UInt32(truncatingIfNeeded: word >> 32)
                c = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                    ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                i &+= 8
            }
            while i < count {
                c = (c >> 8) ^ t[Int((c ^ UInt32(base.load(fromByteOffset: i, as: UInt8.self))) & 0xFF)]
                i &+= 1
            }
        }
        return ~c
    }

    /// CRC32C of a byte array.
    /// - Parameter bytes: the data.
    /// - Returns: the finished checksum.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { update(0, $0) }
    }
}
