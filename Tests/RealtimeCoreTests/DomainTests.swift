import RealtimeTestSupport
import Testing
@testable import RealtimeCore

@Suite struct ChannelNameTests {
    @Test(arguments: ["a", "orders:eu", "A-Z_0.9@x=y", String(repeating: "x", count: 200)])
    func acceptsContractCharacters(_ name: String) throws {
        #expect(try ChannelName(validating: name).rawValue == name)
    }

    @Test(arguments: ["", "has space", "star*", "slash/x", "ümlaut", "quote\"", String(repeating: "x", count: 201)])
    func refusesOthersWith40010(_ name: String) {
        #expect(throws: RealtimeError.badChannelName(name)) { try ChannelName(validating: name) }
    }
}

@Suite struct CapabilityTests {
    let caps = try! Capabilities(wire: ["orders:*": ["subscribe", "presence"], "chat:lobby": ["*"], "news": ["history"]])

    @Test func exactNameMatchesOnlyItself() throws {
        #expect(caps.allows(.publish, on: try ChannelName(validating: "chat:lobby")))
        #expect(!caps.allows(.publish, on: try ChannelName(validating: "chat:lobby2")))
        #expect(!caps.allows(.publish, on: try ChannelName(validating: "chat")))
    }

    @Test func prefixPatternMatchesDeeperNamesButNotTheBareNamespace() throws {
        #expect(caps.allows(.subscribe, on: try ChannelName(validating: "orders:eu")))
        #expect(caps.allows(.subscribe, on: try ChannelName(validating: "orders:eu:paris")))
        #expect(!caps.allows(.subscribe, on: try ChannelName(validating: "orders")))
        #expect(!caps.allows(.subscribe, on: try ChannelName(validating: "ordersx:eu")))
        #expect(!caps.allows(.publish, on: try ChannelName(validating: "orders:eu")))
    }

    @Test func starGrantsEverything() throws {
        let all = try Capabilities(wire: ["*": ["*"]])
        for op in ChannelOperation.allCases { #expect(all.allows(op, on: try ChannelName(validating: "any:thing"))) }
    }

    @Test func grantsAreUnionedAcrossPatterns() throws {
        let c = try Capabilities(wire: ["a:*": ["subscribe"], "*": ["history"]])
        let ch = try ChannelName(validating: "a:b")
        #expect(c.allows(.subscribe, on: ch) && c.allows(.history, on: ch) && !c.allows(.publish, on: ch))
    }

    @Test(arguments: [["bad pattern": ["subscribe"]], ["x*": ["subscribe"]], ["ok": ["fly"]]])
    func refusesMalformedMaps(_ wire: [String: [String]]) {
        #expect(throws: RealtimeError.self) { try Capabilities(wire: wire) }
    }

    @Test func wireFormRoundTrips() throws {
        #expect(try Capabilities(wire: caps.wire) == caps)
        #expect(caps.wire["chat:lobby"] == ["*"])
    }
}

@Suite struct RandomIDTests {
    @Test func givesTheBytesAskedForAndTheyVary() {
        for n in 0...20 { #expect(RandomID.bytes(n).count == n) }
        #expect(RandomID.hex(bytes: 6).count == 12)
        #expect(Set((0..<50).map { _ in RandomID.hex(bytes: 6) }).count == 50)
        for n in 0...20 {
            let text = RandomID.hex(bytes: n)
            #expect(text.utf8.count == 2 * n && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }, "\(text)")
        }
        // Every digit value turns up at both positions of a byte.
        let many = (0..<200).map { _ in Array(RandomID.hex(bytes: 8).utf8) }
        #expect(Set(many.flatMap { $0.enumerated().filter { $0.offset % 2 == 0 }.map(\.element) }).count == 16)
        #expect(Set(many.flatMap { $0.enumerated().filter { $0.offset % 2 == 1 }.map(\.element) }).count == 16)
    }

    /// Epoch candidates: never the same twice in a process, from several threads at once, and
    /// spread over every digit at every position.
    @Test func uniqueHexNeverRepeatsInAProcess() async {
        for n in 1...8 {
            let text = RandomID.uniqueHex(bytes: n)
            #expect(text.utf8.count == 2 * n && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }, "\(text)")
        }
        let drawn = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<4 { group.addTask { (0..<25_000).map { _ in RandomID.uniqueHex(bytes: 6) } } }
            return await group.reduce(into: []) { $0 += $1 }
        }
        #expect(drawn.count == 100_000 && Set(drawn).count == 100_000)
        for position in 0..<12 {
            #expect(Set(drawn.prefix(1000).map { Array($0.utf8)[position] }).count == 16, "digit \(position)")
        }
    }
}

@Suite struct MessageIDTests {
    @Test func parsesAndOrdersLikeRedisStreamIDs() throws {
        let a = try #require(MessageID("1700000000000-0"))
        let b = try #require(MessageID("1700000000000-1"))
        let c = try #require(MessageID("1700000000001"))
        #expect(a < b && b < c)
        #expect(c.description == "1700000000001-0")
        #expect(MessageID("abc") == nil && MessageID("1-x") == nil && MessageID("-1") == nil)
    }

    @Test func refusesWhatIsNotAnIDAndKeepsEveryValidOne() {
        for bad in ["", "-", "1-", "1--2", "1-2-3", " 1-2", "1-2 ", "+1-2", "18446744073709551616-0", "1-18446744073709551616"] {
            #expect(MessageID(bad) == nil, "\(bad)")
        }
        #expect(MessageID("18446744073709551615-18446744073709551615") == MessageID(milliseconds: .max, sequence: .max))
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<1000 {
            let id = MessageID(milliseconds: rng.next() >> UInt64.random(in: 0...63, using: &rng), sequence: rng.next() >> 40)
            #expect(MessageID(id.description) == id)
            #expect(MessageID(Substring(id.description)) == id)
        }
    }

    @Test func nextNeverGoesBackwardsEvenWhenTheClockDoes() {
        let id = MessageID(milliseconds: 100, sequence: 5)
        #expect(id.next(atMilliseconds: 99) == MessageID(milliseconds: 100, sequence: 6))
        #expect(id.next(atMilliseconds: 100) == MessageID(milliseconds: 100, sequence: 6))
        #expect(id.next(atMilliseconds: 101) == MessageID(milliseconds: 101, sequence: 0))
        #expect(MessageID(milliseconds: 5, sequence: 0).predecessor == MessageID(milliseconds: 4, sequence: .max))
    }
}

@Suite struct JSONTests {
    @Test func timestampsAreISO8601UTCWithMilliseconds() {
        #expect(Timestamp.iso8601(milliseconds: 0) == "1970-01-01T00:00:00.000Z")
        #expect(Timestamp.iso8601(milliseconds: 1_795_365_752_508) == "2026-11-22T16:42:32.508Z")
        #expect(Timestamp.iso8601(milliseconds: 951_782_400_001) == "2000-02-29T00:00:00.001Z")
    }

    @Test func writerEscapesStrings() {
        var w = JSONWriter()
        w.string("a\"b\\c\nd\u{01}é")
        #expect(w.text == "\"a\\\"b\\\\c\\nd\\u0001é\"")
    }

    @Test func compactTextIsStable() {
        let v = JSONValue.object(["b": .array([.integer(1), .number(1.5), .null]), "a": .bool(true)])
        #expect(v.jsonText == "{\"a\":true,\"b\":[1,1.5,null]}")
    }

    @Test func depthGuardRefusesDeepNestingButNotBracketsInStrings() throws {
        let deep = Array(String(repeating: "[", count: 65).utf8)
        #expect(throws: RealtimeError.self) { try JSONGuard.checkDepth(deep) }
        try JSONGuard.checkDepth(Array(("{\"a\":\"" + String(repeating: "[", count: 500) + "\"}").utf8))
    }
}

@Suite struct TokenAuthorityTests {
    let clock = ManualClock()
    let secret = String(repeating: "s", count: 32)

    func claims(ttl: Int64 = 60, key: String? = "k_1") -> TokenClaims {
        let now = clock.nowMilliseconds() / 1000
        return TokenClaims(
            clientID: "alice", userID: "u1", capabilities: try! Capabilities(wire: ["chat:*": ["subscribe"]]),
            issuedAt: now, expiresAt: now + ttl, tokenID: "j1", keyID: key)
    }

    @Test func mintedTokensVerifyWithTheirClaims() async throws {
        let auth = await TokenAuthority(secrets: [TokenSecret(id: "k1", secret: secret)], clock: clock)
        let c = claims()
        #expect(try await auth.verify(try await auth.mint(c)) == c)
    }

    @Test func expiredTokensGet40140() async throws {
        let auth = await TokenAuthority(secrets: [TokenSecret(id: "k1", secret: secret)], clock: clock)
        let token = try await auth.mint(claims(ttl: 10))
        clock.advance(byMilliseconds: 10_000)
        await #expect(throws: RealtimeError.tokenExpired()) { try await auth.verify(token) }
    }

    @Test func forgedOrMalformedTokensGet40141() async throws {
        let auth = await TokenAuthority(secrets: [TokenSecret(id: "k1", secret: secret)], clock: clock)
        let other = await TokenAuthority(secrets: [TokenSecret(id: "k1", secret: String(repeating: "x", count: 32))], clock: clock)
        let forged = try await other.mint(claims())
        for bad in [forged, "not.a.jwt", "", String(repeating: "a", count: 10_000)] {
            do {
                _ = try await auth.verify(bad)
                Issue.record("accepted \(bad.prefix(20))")
            } catch {
                #expect(error.code == 40141)
            }
        }
    }

    @Test func rotationVerifiesTokensSignedWithAnOlderSecret() async throws {
        let old = await TokenAuthority(secrets: [TokenSecret(id: "old", secret: secret)], clock: clock)
        let rotated = await TokenAuthority(
            secrets: [TokenSecret(id: "new", secret: String(repeating: "n", count: 32)), TokenSecret(id: "old", secret: secret)], clock: clock)
        #expect(try await rotated.verify(try await old.mint(claims())).clientID == "alice")
    }
}

@Suite struct APIKeyMaterialTests {
    @Test func generatedKeysMatchOnlyTheirOwnHash() {
        let (id, key) = APIKeyMaterial.generate()
        #expect(APIKeyMaterial.keyID(of: key) == id)
        #expect(APIKeyMaterial.matches(key, hash: APIKeyMaterial.hash(key)))
        #expect(!APIKeyMaterial.matches(key + "x", hash: APIKeyMaterial.hash(key)))
        #expect(!APIKeyMaterial.sameHash(APIKeyMaterial.hash(key), String(APIKeyMaterial.hash(key).dropLast())))
        #expect(!APIKeyMaterial.hash(key).contains(key))
        // Stored hashes (in Redis) are lowercase hex SHA-256: the format must never change.
        #expect(APIKeyMaterial.hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }
}
