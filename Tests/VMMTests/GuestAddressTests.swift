import GuestMemory
import Testing

@Suite struct GuestAddressTests {
    @Test func addingDetectsWrap() {
        #expect(GuestAddress(UInt64.max).adding(1) == nil)
        #expect(GuestAddress(UInt64.max - 4).adding(4) == GuestAddress(UInt64.max))
        #expect(GuestAddress(1).adding(UInt64.max) == nil)
        #expect(GuestAddress(0x1000).adding(0x10) == GuestAddress(0x1010))
    }

    @Test func offsetAndAlignment() {
        #expect(GuestAddress(0x1000).offset(from: GuestAddress(0x2000)) == nil)
        #expect(GuestAddress(0x2010).offset(from: GuestAddress(0x2000)) == 0x10)
        #expect(GuestAddress(0x1001).alignedUp(to: 0x1000) == GuestAddress(0x2000))
        #expect(GuestAddress(UInt64.max).alignedUp(to: 0x1000) == nil)
        #expect(GuestAddress(0x1fff).alignedDown(to: 0x1000) == GuestAddress(0x1000))
        #expect(GuestAddress(0x1000).alignedUp(to: 3) == nil)  // not a power of two
        #expect(GuestAddress(0x3000).isAligned(to: 0x1000))
    }

    @Test func rangeRefusesWrap() {
        #expect(GuestRange(start: GuestAddress(UInt64.max), length: 2) == nil)
        #expect(GuestRange(start: GuestAddress(UInt64.max), length: 1) != nil)
        #expect(GuestRange(start: GuestAddress(0), length: UInt64.max) != nil)
        let r = GuestRange(start: GuestAddress(0x1000), length: 0x1000)!
        #expect(r.contains(GuestRange(start: GuestAddress(0x1800), length: 0x800)!))
        #expect(!r.contains(GuestRange(start: GuestAddress(0x1800), length: 0x801)!))
        #expect(!r.contains(GuestAddress(0x2000)))
        #expect(r.overlaps(GuestRange(start: GuestAddress(0x1fff), length: 1)!))
        #expect(!r.overlaps(GuestRange(start: GuestAddress(0x2000), length: 1)!))
    }
}
