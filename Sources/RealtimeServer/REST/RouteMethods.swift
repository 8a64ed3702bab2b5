import HTTPTypes
import Hummingbird
import Synchronization

/// The methods each registered path answers, so that a request for an existing path with
/// another method is answered `405` / `40500` with an `Allow` header (RFC 9110 §15.5.6)
/// rather than `404`. Filled once the router's routes are registered; read only when the
/// router found no route for a request.
final class RouteMethods: Sendable {
    private struct Entry: Sendable {
        let path: RouterPath
        var methods: [HTTPRequest.Method]
    }
    private let entries = Mutex<[Entry]>([])

    /// Records the router's routes (HEAD is allowed wherever GET is: Hummingbird answers it).
    func record<Context>(_ router: Router<Context>) {
        var table: [Entry] = []
        for route in router.routes {
            if let i = table.firstIndex(where: { $0.path == route.path }) {
                table[i].methods.append(route.method)
            } else {
                table.append(Entry(path: route.path, methods: [route.method]))
            }
        }
        entries.withLock { $0 = table }
    }

    /// The methods allowed on `path`, in a stable order; empty when no route has that path.
    func allowed(path: String) -> [HTTPRequest.Method] {
        let components = path.split(separator: "/", omittingEmptySubsequences: true)
        let found = entries.withLock { table in
            table.filter { entry in
                entry.path.count == components.count && zip(entry.path, components).allSatisfy { $0 ~= $1 }
            }.flatMap(\.methods)
        }
        var methods = Set(found)
        if methods.contains(.get) { methods.insert(.head) }
        return methods.sorted { $0.rawValue < $1.rawValue }
    }
}
