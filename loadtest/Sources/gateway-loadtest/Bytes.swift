import CLoadTest
import Glibc

/// CLOCK_MONOTONIC in nanoseconds: the one clock every process of a run shares (send stamps, phase times).
@inline(__always) func monoNs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
}

/// User + system CPU of this process, in nanoseconds.
func selfCPUNs() -> Int64 {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    return (Int64(ru.ru_utime.tv_sec) + Int64(ru.ru_stime.tv_sec)) * 1_000_000_000
        + (Int64(ru.ru_utime.tv_usec) + Int64(ru.ru_stime.tv_usec)) * 1000
}

/// A byte string held outside Swift's ARC for the hot path (needles, prefixes): allocated once, never freed
/// (lives as long as the process).
struct StaticBytes {
    let base: UnsafeMutablePointer<UInt8>
    let count: Int

    init(_ bytes: [UInt8]) {
        count = bytes.count
        base = .allocate(capacity: max(bytes.count, 1))
        bytes.withUnsafeBufferPointer { b in
            if let a = b.baseAddress { base.update(from: a, count: bytes.count) }
        }
    }

    init(_ s: String) { self.init(Array(s.utf8)) }
}

/// Parses an unsigned decimal at `p[i]...`, advancing `i` past the digits.
@inline(__always) func parseDecimal(_ p: UnsafePointer<UInt8>, _ i: inout Int, _ end: Int) -> Int64 {
    var v: Int64 = 0
    while i < end {
        let d = p[i] &- 48
        if d > 9 { break }
        v = v &* 10 &+ Int64(d)
        i += 1
    }
    return v
}

/// Finds `needle` in `p[from..<end]`; returns the offset of its first byte, or -1.
@inline(__always) func find(_ p: UnsafePointer<UInt8>, from: Int, end: Int, _ needle: StaticBytes) -> Int {
    guard end - from >= needle.count else { return -1 }
    guard let q = clt_memmem(p + from, end - from, needle.base, needle.count) else { return -1 }
    return UnsafeRawPointer(q) - UnsafeRawPointer(p)
}

/// Writes `v` in decimal at `dst`; returns the number of bytes written.
@inline(__always) func writeDecimal(_ dst: UnsafeMutablePointer<UInt8>, _ v: Int64) -> Int {
    if v == 0 {
        dst[0] = 48
        return 1
    }
    var tmp: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch on the stack
    return withUnsafeMutableBytes(of: &tmp) { raw -> Int in
        let t = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var x = UInt64(bitPattern: v)
        var n = 0
        while x > 0 {
            t[n] = UInt8(truncatingIfNeeded: 48 + x % 10)
            x /= 10
            n += 1
        }
        for k in 0..<n { dst[k] = t[n - 1 - k] }
        return n
    }
}

@inline(__always) func decimalLength(_ v: Int64) -> Int {
    var x = v
    var n = 1
    while x >= 10 {
        x /= 10
        n += 1
    }
    return n
}

/// Copies `bytes` to `dst`; returns the count.
@inline(__always) func put(_ dst: UnsafeMutablePointer<UInt8>, _ bytes: StaticBytes) -> Int {
    dst.update(from: bytes.base, count: bytes.count)
    return bytes.count
}

/// Writes all of `bytes` to `fd` (blocking descriptors: pipes to and from the parent).
func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, bytes.count - off) }
        if n < 0 {
            if errno == EINTR { continue }
            return
        }
        off += n
    }
}

/// Escapes a string for a JSON string literal (report path only).
func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                out += "\\u" + String(repeating: "0", count: 4 - String(u.value, radix: 16).count) + String(u.value, radix: 16)
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}
