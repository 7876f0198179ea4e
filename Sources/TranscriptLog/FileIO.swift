// The file-system calls the log makes, behind a protocol so tests can inject EIO, ENOSPC and power cuts
// (reliability.md T7/T8: there is no dm-flakey here, so faults come from this layer).

import Glibc

/// A failed system call: the `errno` it set.
public struct FileIOError: Error, Sendable, Equatable {
    /// The errno value (ENOSPC, EIO, ...).
    public var errno: Int32
    /// Wraps an errno value.
    /// - Parameter errno: the errno value.
    public init(errno: Int32) { self.errno = errno }
}

/// The POSIX calls the transcript log needs. Every method reports failure by throwing the errno.
///
/// Implementations must be safe to call from two threads at once (the storage thread writes while
/// the network thread reads with `pread`).
public protocol FileIO: Sendable {
    /// `open(2)`; the log always adds `O_CLOEXEC`. - Returns: the descriptor.
    /// - Throws: the errno.
    func open(_ path: String, flags: Int32, mode: UInt32) throws(FileIOError) -> Int32
    /// `pwrite(2)` at `offset`; may write fewer bytes than given. - Returns: bytes written.
    /// - Throws: the errno.
    func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, offset: Int64) throws(FileIOError) -> Int
    /// `pread(2)` at `offset`; may read fewer bytes than asked (0 at end of file). - Returns: bytes read.
    /// - Throws: the errno.
    func pread(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int64) throws(FileIOError) -> Int
    /// `fdatasync(2)`. - Throws: the errno.
    func fdatasync(_ fd: Int32) throws(FileIOError)
    /// `ftruncate(2)`. - Throws: the errno.
    func ftruncate(_ fd: Int32, length: Int64) throws(FileIOError)
    /// The file's size (`fstat(2)`). - Throws: the errno.
    func fileSize(_ fd: Int32) throws(FileIOError) -> Int64
    /// Opens the directory and `fsync(2)`s it, making creates, renames and unlinks in it durable.
    /// - Throws: the errno.
    func fsyncDirectory(_ path: String) throws(FileIOError)
    /// `unlink(2)`. - Throws: the errno.
    func unlink(_ path: String) throws(FileIOError)
    /// `rename(2)`. - Throws: the errno.
    func rename(_ from: String, to: String) throws(FileIOError)
    /// `mkdir(2)`; EEXIST is reported like any other errno. - Throws: the errno.
    func makeDirectory(_ path: String) throws(FileIOError)
    /// The names in a directory, without `.` and `..`. - Throws: the errno.
    func listDirectory(_ path: String) throws(FileIOError) -> [String]
    /// `flock(fd, LOCK_EX | LOCK_NB)`; EWOULDBLOCK when another open file description holds it.
    /// - Throws: the errno.
    func lockExclusive(_ fd: Int32) throws(FileIOError)
    /// `close(2)`; errors are ignored (the log syncs explicitly before it closes a written file).
    func close(_ fd: Int32)
}

/// The real file system.
public struct PosixFileIO: FileIO {
    /// Creates the POSIX I/O layer.
    public init() {}

    /// Retries a call interrupted by a signal; every other failure becomes a `FileIOError`.
    @inline(__always)
    private static func retrying(_ call: () -> Int) throws(FileIOError) -> Int {
        // Bounded: EINTR only repeats while signals keep arriving; 1,000 in a row means something is wrong.
        for _ in 0..<1000 {
            let r = call()
            if r >= 0 { return r }
            let e = Glibc.errno
            if e != EINTR { throw FileIOError(errno: e) }
        }
        throw FileIOError(errno: EINTR)
    }

    public func open(_ path: String, flags: Int32, mode: UInt32) throws(FileIOError) -> Int32 {
        Int32(try Self.retrying { Int(Glibc.open(path, flags | O_CLOEXEC, mode)) })
    }

    public func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, offset: Int64) throws(FileIOError) -> Int {
        try Self.retrying { Glibc.pwrite(fd, bytes.baseAddress, bytes.count, off_t(offset)) }
    }

    public func pread(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int64) throws(FileIOError) -> Int {
        try Self.retrying { Glibc.pread(fd, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    public func fdatasync(_ fd: Int32) throws(FileIOError) {
        _ = try Self.retrying { Int(Glibc.fdatasync(fd)) }
    }

    public func ftruncate(_ fd: Int32, length: Int64) throws(FileIOError) {
        _ = try Self.retrying { Int(Glibc.ftruncate(fd, off_t(length))) }
    }

    public func fileSize(_ fd: Int32) throws(FileIOError) -> Int64 {
        var st = stat()
        _ = try Self.retrying { Int(fstat(fd, &st)) }
        return Int64(st.st_size)
    }

    public func fsyncDirectory(_ path: String) throws(FileIOError) {
        let fd = try open(path, flags: O_RDONLY | O_DIRECTORY, mode: 0)
        defer { Glibc.close(fd) }
        _ = try Self.retrying { Int(Glibc.fsync(fd)) }
    }

    public func unlink(_ path: String) throws(FileIOError) {
        _ = try Self.retrying { Int(Glibc.unlink(path)) }
    }

    public func rename(_ from: String, to: String) throws(FileIOError) {
        _ = try Self.retrying { Int(Glibc.rename(from, to)) }
    }

    public func makeDirectory(_ path: String) throws(FileIOError) {
        _ = try Self.retrying { Int(Glibc.mkdir(path, 0o755)) }
    }

    public func listDirectory(_ path: String) throws(FileIOError) -> [String] {
        guard let dir = opendir(path) else { throw FileIOError(errno: Glibc.errno) }
        defer { closedir(dir) }
        var names: [String] = []
        // Bounded by the directory's entry count: readdir returns nil at the end.
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public func lockExclusive(_ fd: Int32) throws(FileIOError) {
        _ = try Self.retrying { Int(flock(fd, LOCK_EX | LOCK_NB)) }
    }

    public func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }
}
