import KVM

/// The registers a vCPU shows gdb, in gdb's numbering for i386:x86-64 (the order of the
/// target description: core, SSE, segment bases, then the system registers), and how
/// each maps onto KVM's state (`kvm_regs`, `kvm_sregs`, `kvm_fpu`, one MSR).
public struct RegisterFile: Sendable, Equatable {
    public var regs: Registers
    public var sregs: SpecialRegisters
    public var fpu: FPUState
    /// IA32_KERNEL_GS_BASE (what `swapgs` exchanges with GS.base).
    public var kernelGSBase: UInt64

    public init(regs: Registers, sregs: SpecialRegisters, fpu: FPUState, kernelGSBase: UInt64) {
        self.regs = regs
        self.sregs = sregs
        self.fpu = fpu
        self.kernelGSBase = kernelGSBase
    }

    public static func == (a: RegisterFile, b: RegisterFile) -> Bool {
        (0 ..< RegisterFile.layout.count).allSatisfy { a.value(of: $0) == b.value(of: $0) }
    }

    /// Which parts of the state a write touched, so that only those go back to KVM.
    public struct Parts: OptionSet, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let general = Parts(rawValue: 1), special = Parts(rawValue: 2)
        public static let fpu = Parts(rawValue: 4), msr = Parts(rawValue: 8)
    }

    public enum Source: Sendable, Equatable {
        case general(VCPURegister)
        case eflags
        case selector(SegmentRegister)
        case x87(Int)
        case fpuControl, fpuStatus, fpuTag, fpuInstructionSegment, fpuInstructionOffset
        case fpuOperandSegment, fpuOperandOffset, fpuOpcode
        case xmm(Int)
        case mxcsr
        case segmentBase(SegmentRegister)
        case control(VCPURegister)
        case kernelGSBase

        var part: Parts {
            switch self {
            case .general, .eflags: return .general
            case .selector, .segmentBase, .control: return .special
            case .kernelGSBase: return .msr
            default: return .fpu
            }
        }
    }

    public struct Definition: Sendable {
        public let name: String
        public let bits: Int
        public let type: String
        public let group: String?
        public let feature: String
        public let source: Source
        public var bytes: Int { bits / 8 }
    }

    static let core = "org.gnu.gdb.i386.core", sse = "org.gnu.gdb.i386.sse"
    static let segments = "org.gnu.gdb.i386.segments", system = "org.swift-vmm.x86.system"

    /// Every register, indexed by gdb register number.
    public static let layout: [Definition] = {
        var d: [Definition] = []
        func add(_ name: String, _ bits: Int, _ type: String, _ feature: String, _ source: Source, group: String? = nil) {
            d.append(Definition(name: name, bits: bits, type: type, group: group, feature: feature, source: source))
        }
        let gp: [(String, VCPURegister)] = [("rax", .rax), ("rbx", .rbx), ("rcx", .rcx), ("rdx", .rdx), ("rsi", .rsi),
                                             ("rdi", .rdi), ("rbp", .rbp), ("rsp", .rsp), ("r8", .r8), ("r9", .r9),
                                             ("r10", .r10), ("r11", .r11), ("r12", .r12), ("r13", .r13), ("r14", .r14),
                                             ("r15", .r15)]
        for (name, reg) in gp {
            add(name, 64, name == "rbp" || name == "rsp" ? "data_ptr" : "int64", core, .general(reg))
        }
        add("rip", 64, "code_ptr", core, .general(.rip))
        add("eflags", 32, "i386_eflags", core, .eflags)
        for (name, seg) in [("cs", SegmentRegister.cs), ("ss", .ss), ("ds", .ds), ("es", .es), ("fs", .fs), ("gs", .gs)] {
            add(name, 32, "int32", core, .selector(seg))
        }
        for i in 0 ..< 8 { add("st\(i)", 80, "i387_ext", core, .x87(i)) }
        let fpu: [(String, Source)] = [("fctrl", .fpuControl), ("fstat", .fpuStatus), ("ftag", .fpuTag),
                                       ("fiseg", .fpuInstructionSegment), ("fioff", .fpuInstructionOffset),
                                       ("foseg", .fpuOperandSegment), ("fooff", .fpuOperandOffset), ("fop", .fpuOpcode)]
        for (name, source) in fpu { add(name, 32, "int", core, source, group: "float") }
        for i in 0 ..< 16 { add("xmm\(i)", 128, "vec128", sse, .xmm(i)) }
        add("mxcsr", 32, "i386_mxcsr", sse, .mxcsr, group: "vector")
        add("fs_base", 64, "int", segments, .segmentBase(.fs))
        add("gs_base", 64, "int", segments, .segmentBase(.gs))
        add("k_gs_base", 64, "int", system, .kernelGSBase, group: "system")
        add("cr0", 64, "x86_cr0", system, .control(.cr0), group: "system")
        add("cr2", 64, "int", system, .control(.cr2), group: "system")
        add("cr3", 64, "int", system, .control(.cr3), group: "system")
        add("cr4", 64, "x86_cr4", system, .control(.cr4), group: "system")
        add("cr8", 64, "int", system, .control(.cr8), group: "system")
        add("efer", 64, "x86_efer", system, .control(.efer), group: "system")
        return d
    }()

    /// gdb's numbers of the registers a stop reply carries, so that gdb need not ask:
    /// rbp, rsp, rip.
    public static let expedited = [6, 7, 16]

    /// The value of register `number`, little-endian, `layout[number].bytes` long.
    public func value(of number: Int) -> [UInt8] {
        let def = Self.layout[number]
        switch def.source {
        case .general(let r): return Self.littleEndian(KVMVCPU.value(of: r, regs, sregs), def.bytes)
        case .eflags: return Self.littleEndian(regs.rflags, 4)
        case .selector(let seg): return Self.littleEndian(KVMVCPU.value(of: .segmentSelector(seg), regs, sregs), 4)
        case .segmentBase(let seg): return Self.littleEndian(KVMVCPU.value(of: .segmentBase(seg), regs, sregs), 8)
        case .control(let r): return Self.littleEndian(KVMVCPU.value(of: r, regs, sregs), 8)
        case .kernelGSBase: return Self.littleEndian(kernelGSBase, 8)
        case .x87(let i): return fpu.x87Registers[i]
        case .xmm(let i): return fpu.xmmRegisters[i]
        case .mxcsr: return Self.littleEndian(UInt64(fpu.mxcsr), 4)
        case .fpuControl: return Self.littleEndian(UInt64(fpu.fcw), 4)
        case .fpuStatus: return Self.littleEndian(UInt64(fpu.fsw), 4)
        case .fpuTag: return Self.littleEndian(UInt64(X87Tags.full(abridged: fpu.ftwx, status: fpu.fsw, registers: fpu.x87Registers)), 4)
        case .fpuInstructionSegment: return Self.littleEndian(fpu.last_ip >> 32, 4)
        case .fpuInstructionOffset: return Self.littleEndian(fpu.last_ip & 0xFFFF_FFFF, 4)
        case .fpuOperandSegment: return Self.littleEndian(fpu.last_dp >> 32, 4)
        case .fpuOperandOffset: return Self.littleEndian(fpu.last_dp & 0xFFFF_FFFF, 4)
        case .fpuOpcode: return Self.littleEndian(UInt64(fpu.last_opcode), 4)
        }
    }

    /// Sets register `number` from `bytes` (exactly its size); returns the part touched.
    @discardableResult
    public mutating func set(_ number: Int, _ bytes: [UInt8]) -> Parts {
        let def = Self.layout[number]
        let v = Self.integer(bytes)
        switch def.source {
        case .general(let r): KVMVCPU.assign(r, v, &regs, &sregs)
        case .eflags: regs.rflags = (regs.rflags & ~0xFFFF_FFFF) | (v & 0xFFFF_FFFF)
        case .selector(let seg): KVMVCPU.assign(.segmentSelector(seg), v, &regs, &sregs)
        case .segmentBase(let seg): KVMVCPU.assign(.segmentBase(seg), v, &regs, &sregs)
        case .control(let r): KVMVCPU.assign(r, v, &regs, &sregs)
        case .kernelGSBase: kernelGSBase = v
        case .x87(let i):
            var all = fpu.x87Registers
            all[i] = bytes
            fpu.x87Registers = all
        case .xmm(let i):
            var all = fpu.xmmRegisters
            all[i] = bytes
            fpu.xmmRegisters = all
        case .mxcsr: fpu.mxcsr = UInt32(truncatingIfNeeded: v)
        case .fpuControl: fpu.fcw = UInt16(truncatingIfNeeded: v)
        case .fpuStatus: fpu.fsw = UInt16(truncatingIfNeeded: v)
        case .fpuTag: fpu.ftwx = X87Tags.abridged(full: UInt16(truncatingIfNeeded: v))
        case .fpuInstructionSegment: fpu.last_ip = (fpu.last_ip & 0xFFFF_FFFF) | (v & 0xFFFF_FFFF) << 32
        case .fpuInstructionOffset: fpu.last_ip = (fpu.last_ip & ~0xFFFF_FFFF) | (v & 0xFFFF_FFFF)
        case .fpuOperandSegment: fpu.last_dp = (fpu.last_dp & 0xFFFF_FFFF) | (v & 0xFFFF_FFFF) << 32
        case .fpuOperandOffset: fpu.last_dp = (fpu.last_dp & ~0xFFFF_FFFF) | (v & 0xFFFF_FFFF)
        case .fpuOpcode: fpu.last_opcode = UInt16(truncatingIfNeeded: v & 0x7FF)
        }
        return def.source.part
    }

    /// All registers in number order: the `g` reply.
    public var all: [UInt8] { (0 ..< Self.layout.count).flatMap { value(of: $0) } }

    /// Total bytes of `all`.
    public static let totalBytes = layout.reduce(0) { $0 + $1.bytes }

    /// Sets every register from a `G` packet's bytes (a prefix is allowed: the rest
    /// keep their values, as gdb's `G` with a shorter buffer means); returns the parts
    /// that changed, or nil when the length is not at a register boundary.
    public mutating func setAll(_ bytes: [UInt8]) -> Parts? {
        var offset = 0, parts: Parts = []
        for n in 0 ..< Self.layout.count where offset < bytes.count {
            let size = Self.layout[n].bytes
            guard offset + size <= bytes.count else { return nil }
            let piece = Array(bytes[offset ..< offset + size])
            if piece != value(of: n) { parts.insert(set(n, piece)) }
            offset += size
        }
        return offset == bytes.count ? parts : nil
    }

    static func littleEndian(_ v: UInt64, _ size: Int) -> [UInt8] {
        (0 ..< size).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) }
    }

    static func integer(_ bytes: [UInt8]) -> UInt64 {
        bytes.prefix(8).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }
}

/// The x87 tag word: FXSAVE keeps one "not empty" bit per register (the abridged tag),
/// gdb shows the full two-bit tags (00 valid, 01 zero, 10 special, 11 empty), which
/// follow from each register's contents (SDM vol. 1 10.5.1.1).
enum X87Tags {
    static func full(abridged: UInt8, status: UInt16, registers: [[UInt8]]) -> UInt16 {
        let top = Int((status >> 11) & 7)
        var tags: UInt16 = 0
        for physical in 0 ..< 8 {
            let tag: UInt16
            if abridged & (1 << physical) == 0 {
                tag = 3
            } else {
                // Physical register p is ST((p - TOP) mod 8); FXSAVE stores them in ST order.
                let value = registers[(physical - top + 8) % 8]
                let exponent = (UInt16(value[9]) << 8 | UInt16(value[8])) & 0x7FFF
                let significand = RegisterFile.integer(Array(value[0 ..< 8]))
                if exponent == 0x7FFF {
                    tag = 2
                } else if exponent == 0 {
                    tag = significand == 0 ? 1 : 2
                } else {
                    tag = significand >> 63 == 1 ? 0 : 2
                }
            }
            tags |= tag << (2 * UInt16(physical))
        }
        return tags
    }

    static func abridged(full: UInt16) -> UInt8 {
        var bits: UInt8 = 0
        for physical in 0 ..< 8 where (full >> (2 * UInt16(physical))) & 3 != 3 { bits |= 1 << UInt8(physical) }
        return bits
    }
}
