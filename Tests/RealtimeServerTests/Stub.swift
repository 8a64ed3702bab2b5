import Testing
@Test func stub2() { #expect(1 == 1) }
