import Foundation

/// Static files served read-only over HTTP (the browser client library and the session page).
///
/// Loaded once at start from `web.root` into memory, so serving them costs no file I/O on the service thread
/// and no request path ever reaches the file system (no traversal): a path is either a key of this table or 404.
struct WebAssets: Sendable {
    struct Asset: Sendable {
        var contentType: String
        var body: [UInt8]
    }

    private(set) var byPath: [String: Asset] = [:]
    /// `/dir` → `/dir/` for directories with an index, so relative links in the page resolve inside it.
    private(set) var redirects: [String: String] = [:]
    static let maxFiles = 256
    static let maxFileBytes = 2 << 20

    /// Loads every regular, non-hidden file under `root` (bounded), keyed by `/` + its relative path.
    /// A directory's `index.html` is also served at `/dir/` and `/dir`. A missing root yields an empty table.
    init(root: String) {
        guard !root.isEmpty, let enumerator = FileManager.default.enumerator(atPath: root) else { return }
        var count = 0
        while let rel = enumerator.nextObject() as? String, count < Self.maxFiles {
            if rel.split(separator: "/").contains(where: { $0.hasPrefix(".") }) { continue }
            let full = root + "/" + rel
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: full, isDirectory: &isDir), !isDir.boolValue,
                let attrs = try? FileManager.default.attributesOfItem(atPath: full),
                (attrs[.size] as? NSNumber)?.intValue ?? Int.max <= Self.maxFileBytes,
                let data = FileManager.default.contents(atPath: full)
            else { continue }
            let asset = Asset(contentType: Self.contentType(rel), body: Array(data))
            byPath["/" + rel] = asset
            if rel == "index.html" || rel.hasSuffix("/index.html") {
                let dir = "/" + rel.dropLast("index.html".count)
                byPath[String(dir)] = asset
                if dir.count > 1 { redirects[String(dir.dropLast())] = String(dir) }
            }
            count += 1
        }
    }

    subscript(path: String) -> Asset? { byPath[path] }
    func redirect(_ path: String) -> String? { redirects[path] }
    var count: Int { byPath.count }

    static func contentType(_ name: String) -> String {
        switch (name as NSString).pathExtension.lowercased() {
        case "js", "mjs": return "text/javascript; charset=utf-8"
        case "html": return "text/html; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "json": return "application/json"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "ico": return "image/x-icon"
        default: return "application/octet-stream"
        }
    }
}
