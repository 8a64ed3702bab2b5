import Hummingbird
import NIOCore
import NIOHTTP1
import RealtimeCore

/// A finished JSON response, before it is a Hummingbird `Response` or written by the fast path.
struct JSONReply: Sendable {
    var status: HTTPResponse.Status
    var body: String
    var headers: HTTPFields = [:]

    /// The contract's error envelope, with `Retry-After` (seconds) when the error has a hint.
    init(error: RealtimeError) {
        status = HTTPResponse.Status(code: error.status)
        body = "{\"error\":\(JSONResponse.errorObject(error))}"
        if let retry = error.retryAfterMilliseconds { headers[.retryAfter] = String(max(1, (retry + 999) / 1000)) }
    }

    init(status: HTTPResponse.Status, body: String, headers: HTTPFields = [:]) {
        self.status = status
        self.body = body
        self.headers = headers
    }
}

/// JSON responses and the contract's error envelope.
enum JSONResponse {
    static func make(_ reply: JSONReply) -> Response { make(reply.status, reply.body, headers: reply.headers) }

    static func make(_ status: HTTPResponse.Status, _ text: String, headers: HTTPFields = [:]) -> Response {
        var headers = headers
        headers[.contentType] = "application/json; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func object(_ status: HTTPResponse.Status = .ok, _ body: (inout JSONWriter) -> Void) -> Response {
        var w = JSONWriter()
        w.raw("{")
        body(&w)
        w.raw("}")
        return make(status, w.text)
    }

    /// `{"code","message","status"}`, the body of `"error"` in responses and batch results.
    static func errorObject(_ error: RealtimeError) -> String {
        var w = JSONWriter()
        w.raw("{")
        w.key("code", first: true); w.raw(String(error.code))
        w.key("message"); w.string(error.message)
        w.key("status"); w.raw(String(error.status))
        w.raw("}")
        return w.text
    }

    static func error(_ error: RealtimeError) -> Response { make(JSONReply(error: error)) }
}

/// Turns every error a route throws into the contract's JSON error envelope.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Tells a path that exists under other methods (`405`) from an unknown one (`404`).
    let routes: RouteMethods

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as RealtimeError {
            return JSONResponse.error(error)
        } catch is HTTPParserError {
            // The request's body did not parse as HTTP/1.1 (a malformed chunk); the connection
            // closes after this answer (HTTPExchanges).
            return JSONResponse.error(.badRequest("malformed HTTP/1.1 request body"))
        } catch is NIOTooManyBytesError {
            return JSONResponse.error(.tooLarge("request body too large"))
        } catch let error as HTTPError {
            switch error.status {
            case .notFound:
                let allowed = routes.allowed(path: request.uri.path)
                guard !allowed.isEmpty else {
                    return JSONResponse.error(.notFound("no such endpoint: \(request.method) \(request.uri.path)"))
                }
                let list = allowed.map(\.rawValue).joined(separator: ", ")
                var response = JSONResponse.error(RealtimeError(code: 40500, message: "method \(request.method) not allowed on \(request.uri.path); allowed: \(list)"))
                response.headers[.allow] = list
                return response
            case .contentTooLarge: return JSONResponse.error(.tooLarge("request body too large"))
            case .methodNotAllowed: return JSONResponse.error(RealtimeError(code: 40500, message: "method not allowed"))
            case .badRequest: return JSONResponse.error(.badRequest(error.body ?? "bad request"))
            default:
                let status = error.status.code
                return JSONResponse.error(RealtimeError(code: status * 100, message: error.body ?? error.status.reasonPhrase))
            }
        } catch {
            context.logger.error("unhandled error", metadata: ["error": "\(error)"])
            return JSONResponse.error(.internal())
        }
    }
}
