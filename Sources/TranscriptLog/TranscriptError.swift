// The module's one public error type: a struct around a code (style.md rule 2), so new cases can be
// added without breaking the gateway's `switch`, which maps every code to the wire error `unavailable`.

import Glibc

/// An error from the transcript log. Every case but `.outcomeUnknown` means "the event was not stored" (wire
/// error `unavailable`).
public struct TranscriptError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong.
    public enum Code: Sendable, Equatable {
        /// ENOSPC, EFBIG or EDQUOT while writing: nothing of the batch was kept; retry when space returns.
        case diskFull
        /// Another I/O error; `errno` and the failing operation are in the error's fields.
        case ioError
        /// The directory (or file system) cannot be written.
        case readOnly
        /// Another process (or another open in this process) holds the directory's lock file.
        case locked
        /// Damage in the middle of the log, or a file that is not a transcript segment.
        case corrupted
        /// The log was closed.
        case closed
        /// A write or fdatasync failed earlier; the log refuses writes until it is reopened.
        case failed
        /// A write or fdatasync of a batch failed, and cutting the batch back off the file (truncate, then fdatasync)
        /// failed too: the batch may be in the file and be served after a reopen. The log is failed; nobody may be
        /// told the batch was stored, nor that it was not.
        case outcomeUnknown
        /// A record's payload exceeds `maxRecordBytes`, a string exceeds 65,535 bytes, or a batch exceeds 1 GiB.
        case recordTooLarge
        /// An option is out of range (message says which).
        case invalidOptions
        /// The operation needs a writable log but this one was opened read-only.
        case notWritable
    }

    /// The error's kind.
    public let code: Code
    /// The errno behind `.diskFull`, `.ioError`, `.readOnly` (0 when none).
    public let errno: Int32
    /// The system call or step that failed ("fdatasync", "pwrite", ...), empty when none.
    public let operation: String
    /// For `.corrupted`: the segment file name; otherwise empty.
    public let segment: String
    /// For `.corrupted`: the byte offset of the damage in `segment`; otherwise 0.
    public let offset: Int
    /// A short human-readable reason (never contains event data).
    public let reason: String
    /// Where the error was raised (`#fileID:#line`), for logs.
    public let location: String

    init(
        _ code: Code, errno: Int32 = 0, operation: String = "", segment: String = "", offset: Int = 0,
        reason: String = "", fileID: StaticString = #fileID, line: UInt = #line
    ) {
        self.code = code
        self.errno = errno
        self.operation = operation
        self.segment = segment
        self.offset = offset
        self.reason = reason
        self.location = "\(fileID):\(line)"
    }

    /// Maps a failed system call to `.diskFull`, `.readOnly` or `.ioError`.
    static func io(
        _ error: FileIOError, _ operation: String, fileID: StaticString = #fileID, line: UInt = #line
    ) -> TranscriptError {
        switch error.errno {
        case ENOSPC, EFBIG, EDQUOT:
            return TranscriptError(.diskFull, errno: error.errno, operation: operation, fileID: fileID, line: line)
        case EROFS:
            return TranscriptError(.readOnly, errno: error.errno, operation: operation, fileID: fileID, line: line)
        default:
            return TranscriptError(.ioError, errno: error.errno, operation: operation, fileID: fileID, line: line)
        }
    }

    static func corrupted(
        _ segment: String, _ offset: Int, _ reason: String, fileID: StaticString = #fileID, line: UInt = #line
    ) -> TranscriptError {
        TranscriptError(.corrupted, segment: segment, offset: offset, reason: reason, fileID: fileID, line: line)
    }

    public var description: String {
        var s = "TranscriptError.\(code)"
        if !operation.isEmpty { s += " in \(operation)" }
        if errno != 0 { s += " (errno \(errno): \(String(cString: strerror(errno))))" }
        if !segment.isEmpty { s += " at \(segment)+\(offset)" }
        if !reason.isEmpty { s += ": \(reason)" }
        return s
    }

    /// Equal when code, errno, operation, segment and offset match (the source location is ignored).
    public static func == (a: TranscriptError, b: TranscriptError) -> Bool {
        a.code == b.code && a.errno == b.errno && a.operation == b.operation && a.segment == b.segment
            && a.offset == b.offset
    }
}
