import Configuration
import Foundation

/// A JSON value from the configuration file.
enum JSONTree: Decodable, Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONTree])
    case object([String: JSONTree])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONTree].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONTree].self))
        }
    }

    var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int: return "an integer"
        case .double: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// `Config/gateway.json`, split into scalar values (an `InMemoryProvider` for swift-configuration, so
/// the environment and overrides can layer over them) and the file-only nested values.
struct ConfigFile: Sendable {
    /// Where the values came from, for messages.
    var source: String
    /// Scalar values, typed as their key requires.
    var scalars: [AbsoluteConfigKey: ConfigValue] = [:]
    /// Keys present (non-null) in the file.
    var presentKeys: Set<String> = []
    /// `listen.additional`, `auth.public_keys`, `rate_limits.tiers`, raw.
    var nested: [String: JSONTree] = [:]

    static let none = ConfigFile(source: "defaults")

    static func load(path: String) throws -> ConfigFile {
        var isDirectory = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory else {
            throw GatewayConfigError(key: nil, message: "configuration file \(path) does not exist (or is a directory)")
        }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw GatewayConfigError(key: nil, message: "configuration file \(path) cannot be read: \(error)")
        }
        let tree: JSONTree
        do {
            tree = try JSONDecoder().decode(JSONTree.self, from: data)
        } catch {
            throw GatewayConfigError(key: nil, message: "configuration file \(path) is not valid JSON: \(error)")
        }
        guard case .object(let root) = tree else {
            throw GatewayConfigError(key: nil, message: "configuration file \(path) must hold a JSON object")
        }
        var file = ConfigFile(source: "file \(path)")
        try file.walk(root, prefix: [])
        return file
    }

    private mutating func walk(_ object: [String: JSONTree], prefix: [String]) throws {
        for (name, value) in object.sorted(by: { $0.key < $1.key }) {
            let components = prefix + [name]
            let key = components.joined(separator: ".")
            if case .null = value { continue }
            if let descriptor = ConfigKeys.byKey[key] {
                presentKeys.insert(key)
                if descriptor.fileOnly {
                    nested[key] = value
                } else if let kind = descriptor.kind {
                    scalars[AbsoluteConfigKey(components)] = try typed(value, kind: kind, descriptor: descriptor)
                }
            } else if case .object(let child) = value,
                ConfigKeys.byKey.keys.contains(where: { $0.hasPrefix(key + ".") })
            {
                try walk(child, prefix: components)
            } else {
                throw GatewayConfigError(key: key, message: "unknown key \(key) in \(source) (see Config/README.md)")
            }
        }
    }

    private func typed(_ value: JSONTree, kind: ConfigKind, descriptor: ConfigKeyDescriptor) throws -> ConfigValue {
        let content: ConfigContent?
        switch (kind, value) {
        case (.string, .string(let string)), (.choice, .string(let string)):
            content = .string(string)
        case (.int, .int(let int)):
            content = .int(int)
        case (.double, .int(let int)):
            content = .double(Double(int))
        case (.double, .double(let double)):
            content = .double(double)
        case (.bool, .bool(let bool)):
            content = .bool(bool)
        case (.stringList, .array(let elements)):
            var strings: [String] = []
            for element in elements {
                guard case .string(let string) = element else {
                    strings = []
                    break
                }
                strings.append(string)
            }
            content = strings.count == elements.count ? .stringArray(strings) : nil
        default:
            content = nil
        }
        guard let content else {
            throw GatewayConfigError(
                key: descriptor.key,
                environmentVariables: descriptor.environmentVariables,
                message:
                    "invalid value for \(descriptor) in \(source): expected \(kind.expectation), got \(value.typeName)"
            )
        }
        return ConfigValue(content, isSecret: descriptor.isSecret)
    }
}
