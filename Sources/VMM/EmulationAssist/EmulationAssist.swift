import GuestMemory
import KVM
import Synchronization

/// Finishes, in the VMM, the instructions a host's instruction emulator refuses.
///
/// On a KVM that runs guest CPL 0 through its emulator (PVM on this project's hosts,
/// README, "The KVM on these machines"), `int3`, `clac`, `popcnt`, `cmpxchg16b` and a few
/// more end `KVM_RUN` with `KVM_EXIT_INTERNAL_ERROR` / `KVM_INTERNAL_ERROR_EMULATION` and
/// the instruction's bytes. The assist is entered only from that exit (and from the
/// machine's no-progress probe, `finishStalledHypercall`): no other exit pays anything
/// for it. It decodes the bytes (`X86Decoder`), finishes the instruction exactly
/// as the CPU would (registers, flags, memory through the page walk, faults injected with
/// `KVM_SET_VCPU_EVENTS`), and writes the registers back through the sync-register area.
/// Anything it cannot finish exactly stops the VM with the bytes and a mnemonic.
///
/// Breakpoints: a debugger that plants `0xCC` in guest memory registers a
/// `BreakpointClaimant`; every `int3` is offered to it first, then to the syscall
/// repair's own breakpoint, and only then delivered to the guest as its own `#BP`.
public final class EmulationAssist: Sendable {
    /// What to do after an assisted exit.
    enum Outcome: Equatable {
        case resume
        /// A breakpoint claimant took the `int3` (the vCPU state is untouched).
        case claimed
        /// The instruction cannot be finished exactly: stop the VM with this detail.
        case stop(String)
    }

    let memory: GuestMemory
    /// The host's needs, as probed.
    let host: HostEmulation
    /// The #PF-handler breakpoint that repairs 64-bit `syscall`, when the host breaks it.
    let syscallRepair: SyscallRepair?
    let counters = AssistCounters()
    /// How this VM's XSAVE area is read (ldmxcsr/stmxcsr), learnt from its first vCPU
    /// before the guest runs (`adoptXSAVELayout`); nil on a KVM without one.
    let xsaveLayout = Mutex<KVMVCPU.XSAVELayout?>(nil)
    private let claimant = Mutex<(any BreakpointClaimant)?>(nil)

    init(memory: GuestMemory, host: HostEmulation) {
        self.memory = memory
        self.host = host
        syscallRepair = host.syscallBroken ? SyscallRepair(memory: memory) : nil
    }

    /// Installs (or with nil removes) the debugger hook consulted before any `int3` is
    /// treated as the guest's own.
    public func setBreakpointClaimant(_ newValue: (any BreakpointClaimant)?) {
        claimant.withLock { $0 = newValue }
    }

    /// Records the machine's XSAVE layout (`Machine.xsaveLayout`, asked before any
    /// sandbox: the assist's ldmxcsr/stmxcsr use it while one forbids KVM_CHECK_EXTENSION).
    func adopt(xsaveLayout layout: KVMVCPU.XSAVELayout?) {
        xsaveLayout.withLock { $0 = layout }
    }

    /// Forgets per-boot state (planted breakpoints, syscall MSRs): the image is reloaded.
    func reset() { syscallRepair?.reset() }

    // MARK: - Emulation failures

    /// Handles `KVM_EXIT_INTERNAL_ERROR` with suberror `KVM_INTERNAL_ERROR_EMULATION`.
    func handleEmulationFailure(on vcpu: KVMVCPU) -> Outcome {
        var ctx: AssistContext
        do { ctx = try AssistContext(vcpu: vcpu, memory: memory) } catch {
            return .stop("instruction emulation failed; reading the vCPU's registers for the assist: \(error)")
        }
        let rip = ctx.regs.rip
        let insn: DecodedInstruction
        do { insn = try fetchAndDecode(vcpu.emulationFailureBytes(), &ctx) } catch {
            return .stop("instruction emulation failed at rip 0x\(String(rip, radix: 16)): \(error.message)")
        }
        syscallRepair?.revalidate(ctx)

        var kind = AssistedInstruction.identify(insn)
        if kind == .int3 {
            if let claimant = claimant.withLock({ $0 }), claimant.claims(vcpu: vcpu.id, rip: rip) { return .claimed }
            if let repair = syscallRepair {
                switch repair.handleBreakpoint(&ctx, self) {
                case .notOurs: break
                case .repairedSyscall: counters.bump("syscall_repair"); ctx.commit(); return .resume
                case .passedPageFault(let displaced): kind = displaced; counters.bump("page_fault_passed")
                case .failed(let why): return .stop(why)
                }
            }
        }
        return finish(kind, insn, &ctx)
    }

    /// Finishes `kind` (decoded as `insn`) and commits the registers, or injects the
    /// fault it raises, or says why it cannot.
    func finish(_ kind: AssistedInstruction, _ insn: DecodedInstruction, _ ctx: inout AssistContext) -> Outcome {
        let trapAfter = ctx.regs.rflags & AssistContext.trap != 0
        do {
            try execute(kind, insn, &ctx)
        } catch let fault as GuestFault {
            return deliver(fault, kind, insn, &ctx)
        } catch let refusal as Refusal {
            return .stop(describe(insn, ctx, why: refusal.why))
        } catch {
            return .stop(describe(insn, ctx, why: "\(error)"))
        }
        ctx.commit()
        counters.bump(kind.statisticName)
        // RFLAGS.TF: a single-step trap follows every instruction but int3/int n, whose
        // delivery clears TF itself.
        if trapAfter, kind != .int3, !kind.isSoftwareInterrupt {
            do {
                var debug = try ctx.vcpu.debugRegisters()
                debug.dr6 |= 1 << 14  // BS
                try ctx.vcpu.setDebugRegisters(debug)
                try ctx.vcpu.injectException(vector: 1)
            } catch {
                return .stop(describe(insn, ctx, why: "delivering the single-step trap: \(error)"))
            }
        }
        return .resume
    }

    private func deliver(_ fault: GuestFault, _ kind: AssistedInstruction, _ insn: DecodedInstruction,
                         _ ctx: inout AssistContext) -> Outcome {
        // A fault leaves RIP on the instruction; only CR2 changes (for #PF).
        if let cr2 = fault.cr2 {
            ctx.sregs.cr2 = cr2
            ctx.markSpecialRegistersDirty()
        }
        ctx.commit()
        do { try ctx.vcpu.injectException(vector: fault.vector, errorCode: fault.errorCode) } catch {
            return .stop(describe(insn, ctx, why: "injecting \(fault): \(error)"))
        }
        counters.bump(kind.statisticName)
        counters.bump("faults_injected")
        return .resume
    }

    /// The stop message: where, the bytes, the mnemonic, and why.
    func describe(_ insn: DecodedInstruction, _ ctx: AssistContext, why: String) -> String {
        "instruction emulation failed at rip 0x\(String(ctx.regs.rip, radix: 16)) (CPL \(ctx.cpl)): "
            + "\(insn.hexBytes) (\(AssistedInstruction.mnemonic(insn))): \(why)"
    }

    /// Decodes the reported bytes; when they end before the instruction does (KVM
    /// fetched up to a page end), fetches 15 bytes at CS:RIP through the page walk.
    private func fetchAndDecode(_ reported: [UInt8]?, _ ctx: inout AssistContext) throws(DecodeProblem) -> DecodedInstruction {
        let codeSize = ctx.codeSize
        if let reported {
            do { return try X86Decoder.decode(reported, codeSize: codeSize) } catch .truncated {} catch {
                throw DecodeProblem(bytes: reported, failure: error)
            }
        }
        let linear = ctx.segment(.cs).base &+ ctx.regs.rip
        let fetched: [UInt8]
        do {
            fetched = try memory.readVirtual(at: codeSize == .bits64 ? ctx.regs.rip : linear & 0xFFFF_FFFF,
                                             count: X86Decoder.maxLength, paging: ctx.paging, access: .debugger(.execute))
        } catch {
            throw DecodeProblem(bytes: reported ?? [], failure: .truncated, detail: "fetching the instruction: \(error)")
        }
        do { return try X86Decoder.decode(fetched, codeSize: codeSize) } catch { throw DecodeProblem(bytes: fetched, failure: error) }
    }

    struct DecodeProblem: Error {
        let bytes: [UInt8]
        let failure: X86Decoder.Failure
        var detail: String?

        var message: String {
            let hex = bytes.map { X86Decoder.hex($0) }.joined(separator: " ")
            if let detail { return "\(hex): \(detail)" }
            switch failure {
            case .truncated: return "\(hex): the bytes end inside the instruction"
            case .tooLong: return "\(hex): longer than 15 bytes"
            case .unknownOpcode(let what): return "\(hex) (\(what)): the emulation assist cannot finish it"
            }
        }
    }
}

/// A debugger's claim on `int3`s it planted (issue 11: the later gdb stub). Called on
/// the vCPU's thread for every `int3` the host refused, before anything else looks at
/// it; return true to take it (the assist then leaves the vCPU untouched and the VM
/// running: the claimant pauses or resumes it as it likes).
public protocol BreakpointClaimant: Sendable {
    func claims(vcpu: UInt32, rip: UInt64) -> Bool
}

/// An exception the finished instruction raises in the guest.
struct GuestFault: Error, CustomStringConvertible {
    let vector: UInt8
    var errorCode: UInt32?
    var cr2: UInt64?

    static let invalidOpcode = GuestFault(vector: 6)
    static let deviceNotAvailable = GuestFault(vector: 7)
    static let generalProtection = GuestFault(vector: 13, errorCode: 0)
    static let stackFault = GuestFault(vector: 12, errorCode: 0)
    static let mathFault = GuestFault(vector: 16)

    static func pageFault(_ fault: PageFault) -> GuestFault {
        GuestFault(vector: 14, errorCode: fault.errorCode, cr2: fault.address)
    }

    var description: String { "exception \(vector)" + (errorCode.map { " (error code 0x\(String($0, radix: 16)))" } ?? "") }
}

/// Why an instruction cannot be finished exactly.
struct Refusal: Error {
    let why: String
    init(_ why: String) { self.why = why }
}

extension AssistedInstruction {
    var isSoftwareInterrupt: Bool {
        if case .interrupt = self { return true }
        return false
    }
}

/// Counts of each assisted instruction and repair, for the VM's statistics.
final class AssistCounters: Sendable {
    private struct Count {
        let name: String
        var count: UInt64
    }

    /// Kept in name order. An array of a dozen names, not a `[String: UInt64]`: every
    /// machine builds one, and a dictionary's type alone (instantiated even to destroy an
    /// empty one) costs a conformance scan, ~0.15 ms of a cold `vmmctl run`.
    private let counts = Mutex<[Count]>([])

    func bump(_ name: String) {
        counts.withLock { counts in
            let at = counts.firstIndex { $0.name >= name } ?? counts.endIndex
            if at < counts.endIndex, counts[at].name == name {
                counts[at].count &+= 1
            } else {
                counts.insert(Count(name: name, count: 1), at: at)
            }
        }
    }

    /// Every count, by name.
    var snapshot: [(name: String, count: UInt64)] {
        counts.withLock { $0.map { ($0.name, $0.count) } }
    }
}
