import KVM

/// The MSRs firmware would have set before a kernel runs, which a VMM that boots the
/// kernel directly sets itself (Intel SDM Vol. 3: 11.11.2.1 "IA32_MTRR_DEF_TYPE MSR",
/// and IA32_MISC_ENABLE in Vol. 4). Everything else keeps its power-on value (zero):
/// the boot protocols themselves ask only for EFER in long mode (`BootEntry`).
public enum FirmwareMSRs {
    public static let miscEnable: UInt32 = 0x1A0
    public static let mtrrDefaultType: UInt32 = 0x2FF

    /// IA32_MISC_ENABLE.FAST_STRINGS (bit 0), which every BIOS sets; IA32_MTRR_DEF_TYPE
    /// with MTRRs enabled (bit 11) and write-back as the default type (6): all RAM
    /// cacheable, as a BIOS with no variable ranges leaves it. Linux then manages
    /// caching of device memory with PAT.
    public static let values: [(index: UInt32, value: UInt64)] = [
        (miscEnable, 1 << 0),
        (mtrrDefaultType, 1 << 11 | 6),
    ]

    /// Sets them on `vcpu` (each vCPU: MTRRs are per processor and survive INIT).
    public static func apply(to vcpu: KVMVCPU) throws {
        try vcpu.setMSRs(values)
    }
}
