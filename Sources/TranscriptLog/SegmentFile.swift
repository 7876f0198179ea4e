// Open segment files and the buffered reader used by recovery and by `read`.

/// One open segment file. Immutable and shared: readers copy the reference under the index lock and `pread`
/// after releasing it, so retention can drop a segment while a read is still using it; the descriptor is
/// closed when the last reference goes (deinit), and an unlinked file stays readable until then.
final class SegmentFile: Sendable {
    let number: UInt32
    let name: String
    let path: String
    let fd: Int32
    let io: any FileIO
    let header: SegmentHeader?

    init(number: UInt32, name: String, path: String, fd: Int32, io: any FileIO, header: SegmentHeader?) {
        self.number = number
        self.name = name
        self.path = path
        self.fd = fd
        self.io = io
        self.header = header
    }

    deinit { io.close(fd) }
}

/// A window of a file's bytes read with `pread` in large chunks, so scanning costs one system call per chunk
/// rather than per record. Not thread-safe: one per scan or per `read` call.
final class ChunkReader {
    /// Default bytes read per refill when the caller asks for less.
    static let chunkSize = 1 << 20
    private var buffer: UnsafeMutableRawBufferPointer
    /// Bytes read per refill (the capacity asked for): a replay read of a few records should not copy a whole
    /// megabyte out of the page cache.
    private let refill: Int
    private var windowFD: Int32 = -1
    private var windowStart = 0
    private var windowCount = 0

    init(capacity: Int = ChunkReader.chunkSize) {
        buffer = .allocate(byteCount: max(capacity, 64), alignment: 16)
        refill = max(capacity, 64)
    }

    deinit { buffer.deallocate() }

    /// Bytes of `file` from `offset` to at most `limit`, at least `count` of them unless `limit` comes first.
    /// `count` must already be bounded by the caller (it is at most header + max_record).
    func bytes(
        _ file: SegmentFile, offset: Int, count: Int, limit: Int
    ) throws(TranscriptError) -> UnsafeRawBufferPointer {
        let wanted = min(count, limit - offset)
        if windowFD == file.fd, offset >= windowStart, offset + wanted <= windowStart + windowCount {
            let from = offset - windowStart
            let end = min(windowCount, limit - windowStart)
            return UnsafeRawBufferPointer(rebasing: buffer[from..<end])
        }
        let toRead = min(max(wanted, refill), limit - offset)
        if toRead > buffer.count {
            buffer.deallocate()
            buffer = .allocate(byteCount: toRead, alignment: 16)
        }
        windowFD = -1
        var got = 0
        // Bounded: each pread either advances `got` or returns 0 (end of file) and stops the loop.
        while got < toRead {
            let n: Int
            do throws(FileIOError) {
                n = try file.io.pread(
                    file.fd, UnsafeMutableRawBufferPointer(rebasing: buffer[got..<toRead]), offset: Int64(offset + got))
            } catch {
                throw TranscriptError.io(error, "pread \(file.name)")
            }
            if n == 0 { break }
            got += n
        }
        windowFD = file.fd
        windowStart = offset
        windowCount = got
        return UnsafeRawBufferPointer(rebasing: buffer[0..<got])
    }

    /// Forgets the window (after the file was truncated or rewritten).
    func invalidate() { windowFD = -1 }
}
