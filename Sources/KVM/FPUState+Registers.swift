import CKVM

/// The register arrays of `struct kvm_fpu` (the FXSAVE image KVM_GET_FPU returns) as
/// plain byte arrays, so that code above this module needs no raw memory access.
extension FPUState {
    /// ST(0)-ST(7) in stack order, 10 bytes each (the 80-bit extended-precision value,
    /// little-endian: 64-bit significand, then sign and exponent).
    public var x87Registers: [[UInt8]] {
        get { withUnsafeBytes(of: fpr) { raw in (0 ..< 8).map { Array(raw[($0 * 16) ..< ($0 * 16 + 10)]) } } }
        set {
            withUnsafeMutableBytes(of: &fpr) { raw in
                for (i, value) in newValue.prefix(8).enumerated() {
                    // SAFETY: fpr is 8 x 16 bytes; at most 10 bytes go to offset i * 16.
                    for (j, byte) in value.prefix(10).enumerated() { raw[i * 16 + j] = byte }
                }
            }
        }
    }

    /// XMM0-XMM15, 16 bytes each, little-endian.
    public var xmmRegisters: [[UInt8]] {
        get { withUnsafeBytes(of: xmm) { raw in (0 ..< 16).map { Array(raw[($0 * 16) ..< ($0 * 16 + 16)]) } } }
        set {
            withUnsafeMutableBytes(of: &xmm) { raw in
                for (i, value) in newValue.prefix(16).enumerated() {
                    // SAFETY: xmm is 16 x 16 bytes; at most 16 bytes go to offset i * 16.
                    for (j, byte) in value.prefix(16).enumerated() { raw[i * 16 + j] = byte }
                }
            }
        }
    }
}
