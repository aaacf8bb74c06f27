import GuestMemory

/// A virtio entropy device (5.4 "Entropy Device"): every writable buffer the driver
/// offers is filled from getrandom(2). One request queue, no configuration, no features.
public final class EntropyDevice: VirtioRequestDevice {
    public let statistics = VirtioStatistics()
    /// Most bytes one request gets (the driver asks again for more): a guest handing
    /// over gigabytes of buffers cannot make one request cost seconds of host CPU.
    public static let maxBytesPerRequest: UInt64 = 64 << 10
    public static let queueSize: UInt16 = 64

    public init() {}

    public var deviceType: Virtio.DeviceType { .entropy }
    public var deviceFeatures: UInt64 { 0 }
    public var queueSizes: [UInt16] { [Self.queueSize] }
    public var configSpace: [UInt8] { [] }
    public func reset() {}

    public func handle(_ chain: DescriptorChain, queue: Int, memory: GuestMemory) -> UInt32 {
        VirtioStatistics.add(statistics.requests)
        var filled: UInt64 = 0
        for d in chain.writable where filled < Self.maxBytesPerRequest {
            let length = min(UInt64(d.length), Self.maxBytesPerRequest - filled)
            guard let range = GuestRange(start: d.address, length: length),
                  let n = try? memory.fillRandom(range) else {
                VirtioStatistics.add(statistics.errors)
                break
            }
            filled += n
        }
        VirtioStatistics.add(statistics.bytesRead, filled)
        return UInt32(filled)
    }
}
