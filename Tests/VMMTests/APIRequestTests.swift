import Testing
@testable import VMMAPI

/// Pure tests of the API's request parsing: bodies and routes, no daemon.
struct APIRequestTests {
    static func error(_ body: String) -> APIError? {
        do {
            _ = try decodeRequest(CreateVMRequest.self, from: Array(body.utf8))
            return nil
        } catch {
            return error
        }
    }

    @Test(arguments: [
        (#"{"name":"a","name":"b","kernel":"/k"}"#, "name"),
        (#"{"name":"a","kernel":"/k","n\u0061me":"b"}"#, "name"),
        (#"{"name":"a","kernel":"/k","kernel":"/k"}"#, "kernel"),
        (#"{"name":"a","kernel":"/k","memory_mib":16,"memory_mib":16}"#, "memory_mib"),
    ])
    func aKeyGivenTwiceIsRefusedWithItsField(body: String, field: String) {
        let e = Self.error(body)
        #expect(e?.code == .invalidField && e?.field == field, "\(body) -> \(String(describing: e))")
    }

    @Test func duplicatesAreFoundAtAnyDepthAndOnlyWithinOneObject() {
        #expect(JSONDuplicateKeys.first(in: Array(#"{"a":{"b":1,"c":{"d":1,"d":2}}}"#.utf8)) == "a.c.d")
        #expect(JSONDuplicateKeys.first(in: Array(#"{"a":[{"x":1},{"x":2,"x":3}]}"#.utf8)) == "a[1].x")
        #expect(JSONDuplicateKeys.first(in: Array(#"{"a":{"x":1},"b":{"x":1},"s":"{\"a\":1,\"a\":2}"}"#.utf8)) == nil)
        #expect(JSONDuplicateKeys.first(in: Array(#"{"\ud83d\ude00":1,"😀":2}"#.utf8)) == "😀")
        #expect(JSONDuplicateKeys.first(in: Array(#"{"a":1,"a""#.utf8)) == nil)   // not JSON: the decoder says so
    }

    @Test(arguments: ["-1", "2.5", "1e300", "18446744073709551616", "-0.5"])
    func aNumberOutOfRangeIsAnInvalidFieldNamingIt(number: String) {
        let e = Self.error(#"{"name":"a","kernel":"/k","memory_mib":\#(number)}"#)
        #expect(e?.code == .invalidField && e?.field == "memory_mib", "\(number) -> \(String(describing: e))")
        let v = Self.error(#"{"name":"a","kernel":"/k","vcpus":\#(number)e30}"#)
        #expect(v?.code == .invalidField && v?.field == "vcpus", "\(number)e30 -> \(String(describing: v))")
    }

    @Test func oneFamilyOfCodes() throws {
        // A name the server does not know: unknown_field, in the body or the query.
        #expect(Self.error(#"{"name":"a","kernel":"/k","colour":1}"#)?.code == .unknownField)
        #expect(throws: APIError(.unknownField, "unknown query parameter 'colour'", field: "colour")) {
            _ = try APIRoute.parse(method: "GET", uri: "/v1/vms/a?colour=red")
        }
        // A known name with a bad value: invalid_field.
        #expect(Self.error(#"{"name":"a","kernel":7}"#)?.code == .invalidField)
        #expect(throws: APIError.self) { _ = try APIRoute.parse(method: "GET", uri: "/v1/vms/a?owner=nobody") }
        // Not JSON at all: invalid_json, no field.
        #expect(Self.error("{").map { ($0.code, $0.field) } ?? (.internalError, "") == (.invalidJSON, nil))
    }
}
