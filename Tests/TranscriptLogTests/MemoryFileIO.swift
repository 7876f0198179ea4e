// An in-memory file system behind `FileIO` that knows what is durable: the SQLite test6.c idea
// (reliability.md T7/T8). Writes land in `data`; fdatasync copies them to `durable`; fsyncDirectory makes
// names durable. `powerCut()` throws away everything not durable (optionally keeping a torn part of the
// unsynced bytes), and faults make the Nth call of an operation fail with a chosen errno.

import Glibc
import Synchronization
import TranscriptLog

final class MemoryFileIO: FileIO {
    struct Node {
        var data: [UInt8] = []
        var durable: [UInt8] = []
    }

    struct Fault {
        var operation: String
        /// Calls of `operation` to let through before failing.
        var skip: Int
        var errno: Int32
        /// Keep failing after the first failure (a dead disk) instead of once.
        var sticky: Bool
    }

    struct State {
        var nodes: [Int: Node] = [:]
        var names: [String: Int] = [:]
        var durableNames: [String: Int] = [:]
        var directories: Set<String> = []
        var fds: [Int32: (node: Int, path: String)] = [:]
        var locks: [String: Int32] = [:]
        var nextFD: Int32 = 100
        var nextNode = 1
        var capacity: Int? = nil
        var faults: [Fault] = []
        var calls: [String: Int] = [:]
    }

    let state = Mutex(State())

    init(directories: [String] = []) {
        state.withLock { s in for d in directories { s.directories.insert(d) } }
    }

    // MARK: Test controls

    /// Fail the (skip+1)th next call of `operation` ("pwrite", "fdatasync", "open", ...) with `errno`.
    func inject(_ operation: String, after skip: Int = 0, errno: Int32, sticky: Bool = false) {
        state.withLock { $0.faults.append(Fault(operation: operation, skip: skip, errno: errno, sticky: sticky)) }
    }

    func clearFaults() { state.withLock { $0.faults.removeAll() } }

    /// Total bytes the "disk" holds before pwrite reports ENOSPC (nil: unlimited).
    func setCapacity(_ bytes: Int?) { state.withLock { $0.capacity = bytes } }

    func usedBytes() -> Int { state.withLock { s in s.names.values.reduce(0) { $0 + (s.nodes[$1]?.data.count ?? 0) } } }

    func callCount(_ operation: String) -> Int { state.withLock { $0.calls[operation] ?? 0 } }

    /// Power loss: every descriptor and lock is gone, unsynced names and bytes are lost. With `tear`, a file that
    /// grew since its last sync keeps a random part of the new bytes, the last of them possibly garbage.
    func powerCut<G: RandomNumberGenerator>(tear: Bool, using rng: inout G) {
        state.withLock { s in
            s.fds.removeAll()
            s.locks.removeAll()
            s.names = s.durableNames
            for (id, var node) in s.nodes {
                var kept = node.durable
                if tear, node.data.count > node.durable.count, node.data.starts(with: node.durable) {
                    let extra = Int.random(in: 0...(node.data.count - node.durable.count), using: &rng)
                    kept = Array(node.data.prefix(node.durable.count + extra))
                    if extra > 0 && Bool.random(using: &rng) {
                        let garbage = Int.random(in: 1...min(extra, 64), using: &rng)
                        for i in (kept.count - garbage)..<kept.count { kept[i] = UInt8.random(in: 0...255, using: &rng) }
                    }
                }
                node.data = kept
                node.durable = kept
                s.nodes[id] = node
            }
        }
    }

    /// A process crash (kill -9): descriptors and locks go, the page cache (everything written) stays.
    func processCrash() {
        state.withLock { s in
            s.fds.removeAll()
            s.locks.removeAll()
        }
    }

    /// Direct access to a file's current bytes (for damage tests).
    func withFile<R>(_ path: String, _ body: (inout [UInt8]) -> R) -> R? {
        state.withLock { s in
            guard let id = s.names[path], var node = s.nodes[id] else { return nil }
            let r = body(&node.data)
            node.durable = node.data
            s.nodes[id] = node
            return r
        }
    }

    // MARK: FileIO

    private func enter(_ s: inout State, _ op: String) throws(FileIOError) {
        s.calls[op, default: 0] += 1
        guard let i = s.faults.firstIndex(where: { $0.operation == op }) else { return }
        if s.faults[i].skip > 0 {
            s.faults[i].skip -= 1
            return
        }
        let e = s.faults[i].errno
        if !s.faults[i].sticky { s.faults.remove(at: i) }
        throw FileIOError(errno: e)
    }

    private func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return String(path[..<slash])
    }

    func open(_ path: String, flags: Int32, mode: UInt32) throws(FileIOError) -> Int32 {
        try state.withLock { (s: inout State) throws(FileIOError) -> Int32 in
            try enter(&s, "open")
            guard s.directories.contains(parent(path)) else { throw FileIOError(errno: ENOENT) }
            var id = s.names[path]
            if id == nil {
                guard flags & O_CREAT != 0 else { throw FileIOError(errno: ENOENT) }
                id = s.nextNode
                s.nextNode += 1
                s.nodes[id!] = Node()
                s.names[path] = id
            }
            if flags & O_TRUNC != 0 { s.nodes[id!]?.data.removeAll() }
            let fd = s.nextFD
            s.nextFD += 1
            s.fds[fd] = (id!, path)
            return fd
        }
    }

    func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, offset: Int64) throws(FileIOError) -> Int {
        try state.withLock { (s: inout State) throws(FileIOError) -> Int in
            try enter(&s, "pwrite")
            guard let f = s.fds[fd], var node = s.nodes[f.node] else { throw FileIOError(errno: EBADF) }
            let off = Int(offset)
            var count = bytes.count
            if let cap = s.capacity {
                let used = s.names.values.reduce(0) { $0 + (s.nodes[$1]?.data.count ?? 0) }
                let growth = max(0, off + count - node.data.count)
                let room = cap - used
                if growth > room {
                    // A partial write up to the limit, then ENOSPC on the next call: what a full disk does.
                    count = max(0, count - (growth - max(0, room)))
                    if count == 0 { throw FileIOError(errno: ENOSPC) }
                }
            }
            if node.data.count < off + count { node.data += [UInt8](repeating: 0, count: off + count - node.data.count) }
            for i in 0..<count { node.data[off + i] = bytes[i] }
            s.nodes[f.node] = node
            return count
        }
    }

    func pread(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int64) throws(FileIOError) -> Int {
        try state.withLock { (s: inout State) throws(FileIOError) -> Int in
            try enter(&s, "pread")
            guard let f = s.fds[fd], let node = s.nodes[f.node] else { throw FileIOError(errno: EBADF) }
            let off = Int(offset)
            guard off < node.data.count else { return 0 }
            let n = min(buffer.count, node.data.count - off)
            node.data.withUnsafeBytes { src in
                buffer.baseAddress!.copyMemory(from: src.baseAddress! + off, byteCount: n)
            }
            return n
        }
    }

    func fdatasync(_ fd: Int32) throws(FileIOError) {
        try state.withLock { (s: inout State) throws(FileIOError) in
            try enter(&s, "fdatasync")
            guard let f = s.fds[fd] else { throw FileIOError(errno: EBADF) }
            let data = s.nodes[f.node]?.data ?? []
            s.nodes[f.node]?.durable = data
        }
    }

    func ftruncate(_ fd: Int32, length: Int64) throws(FileIOError) {
        try state.withLock { (s: inout State) throws(FileIOError) in
            try enter(&s, "ftruncate")
            guard let f = s.fds[fd], var node = s.nodes[f.node] else { throw FileIOError(errno: EBADF) }
            let n = Int(length)
            if node.data.count > n {
                node.data.removeLast(node.data.count - n)
            } else {
                node.data += [UInt8](repeating: 0, count: n - node.data.count)
            }
            s.nodes[f.node] = node
        }
    }

    func fileSize(_ fd: Int32) throws(FileIOError) -> Int64 {
        try state.withLock { (s: inout State) throws(FileIOError) -> Int64 in
            guard let f = s.fds[fd], let node = s.nodes[f.node] else { throw FileIOError(errno: EBADF) }
            return Int64(node.data.count)
        }
    }

    func fsyncDirectory(_ path: String) throws(FileIOError) {
        try state.withLock { (s: inout State) throws(FileIOError) in
            try enter(&s, "fsyncDirectory")
            for name in s.durableNames.keys where parent(name) == path { s.durableNames.removeValue(forKey: name) }
            for (name, id) in s.names where parent(name) == path { s.durableNames[name] = id }
        }
    }

    func unlink(_ path: String) throws(FileIOError) {
        try state.withLock { (s: inout State) throws(FileIOError) in
            try enter(&s, "unlink")
            guard s.names.removeValue(forKey: path) != nil else { throw FileIOError(errno: ENOENT) }
        }
    }

    func rename(_ from: String, to: String) throws(FileIOError) {
        try state.withLock { (s: inout State) throws(FileIOError) in
            try enter(&s, "rename")
            guard let id = s.names.removeValue(forKey: from) else { throw FileIOError(errno: ENOENT) }
            s.names[to] = id
        }
    }

    func makeDirectory(_ path: String) throws(FileIOError) {
        try state.withLock { (s: inout State) throws(FileIOError) in
            try enter(&s, "makeDirectory")
            guard !s.directories.contains(path) else { throw FileIOError(errno: EEXIST) }
            s.directories.insert(path)
        }
    }

    func listDirectory(_ path: String) throws(FileIOError) -> [String] {
        try state.withLock { (s: inout State) throws(FileIOError) -> [String] in
            try enter(&s, "listDirectory")
            guard s.directories.contains(path) else { throw FileIOError(errno: ENOENT) }
            return s.names.keys.filter { parent($0) == path }.map { String($0.dropFirst(path.count + 1)) }
        }
    }

    func lockExclusive(_ fd: Int32) throws(FileIOError) {
        try state.withLock { (s: inout State) throws(FileIOError) in
            guard let f = s.fds[fd] else { throw FileIOError(errno: EBADF) }
            if let holder = s.locks[f.path], holder != fd, s.fds[holder] != nil { throw FileIOError(errno: EWOULDBLOCK) }
            s.locks[f.path] = fd
        }
    }

    func close(_ fd: Int32) {
        state.withLock { s in
            if let f = s.fds.removeValue(forKey: fd), s.locks[f.path] == fd { s.locks.removeValue(forKey: f.path) }
        }
    }
}
