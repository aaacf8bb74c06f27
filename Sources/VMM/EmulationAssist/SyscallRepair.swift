import GuestMemory
import KVM
import Synchronization

/// Repairs the 64-bit `syscall` of a host that breaks it (`HostEmulation.syscallBroken`):
/// there, a `syscall` from CPL 3 loads RIP = LSTAR, RCX, R11 and the masked RFLAGS but
/// stays at CPL 3, so the very next fetch raises a user-mode #PF at LSTAR, which the
/// host delivers to the guest's #PF handler. No exit tells the VMM.
///
/// The repair (the probe's "repair A"):
/// - a VMM breakpoint (`0xCC`) on the first instruction of the guest's #PF handler, found
///   through its IDT; the byte it covers is kept and that instruction is finished by the
///   assist whenever the breakpoint is passed;
/// - the breakpoint is (re)planted from every emulation failure, the only exits such a
///   host gives a CPL-0 guest on its own (Linux makes them from its int3 self-test on, and
///   with SMAP at every interrupt entry). An MSR filter on LSTAR writes would give an
///   earlier moment, but setting one costs an SRCU grace period per VM here (~16 ms,
///   a third of a VM's create/run/destroy), so the repair does without;
/// - at the breakpoint, the #PF frame is a broken syscall only if it is exactly what a
///   `syscall` at RCX - 2 would have produced: a user-mode instruction-fetch fault at
///   CR2 = RIP = LSTAR from CS RPL 3, RFLAGS = R11 with the SFMASK bits (IF among them)
///   cleared, and `0f 05` at RCX - 2. Then the vCPU is put where `syscall` would have left
///   it: CS/SS from STAR[47:32] (flat, DPL 0, 64-bit), RIP = LSTAR, the user's RSP, and
///   the #PF frame is dropped. Anything else — a genuine #PF, a user `jmp` to LSTAR — goes
///   on to the guest's handler unchanged.
///
/// The kernel may patch its own text under the breakpoint (alternatives rewrite the
/// #PF entry's `clac`): every emulation failure and LSTAR write re-checks the site, and a
/// byte no longer 0xCC is taken as the kernel's new instruction and covered again.
/// Known limits: a guest that reads its own #PF entry sees 0xCC there; CR2 after a repaired
/// syscall holds LSTAR (a real syscall leaves it alone); and a guest that makes its first
/// syscall (or rewrites the byte) with no emulation failure since setting up its IDT gets
/// that one #PF unrepaired.
final class SyscallRepair: Sendable {
    static let msrSTAR: UInt32 = 0xC000_0081, msrLSTAR: UInt32 = 0xC000_0082, msrSFMASK: UInt32 = 0xC000_0084

    /// STAR, LSTAR and SFMASK, read from KVM at the breakpoint (one KVM_GET_MSRS).
    struct SyscallMSRs: Equatable { var star: UInt64, lstar: UInt64, sfmask: UInt64 }

    /// A planted breakpoint: where, and the byte it covers.
    struct Site: Equatable {
        let linear: UInt64
        let physical: GuestAddress
        var original: UInt8
    }

    private struct State {
        var site: Site?
    }

    let memory: GuestMemory
    private let state = Mutex(State())

    init(memory: GuestMemory) { self.memory = memory }

    func reset() { state.withLock { $0 = State() } }

    /// The planted breakpoint, if any (for tests, statistics and snapshots).
    var plantedSite: Site? { state.withLock { $0.site } }

    /// Takes over a breakpoint planted before a snapshot (its 0xCC is in the restored memory).
    func adopt(_ site: Site?) { state.withLock { $0.site = site } }

    // MARK: - Planting

    /// Makes sure the breakpoint sits on the current #PF handler's first byte: plants it
    /// when missing, re-covers it when the kernel rewrote the byte, moves it (restoring the
    /// old byte) when the IDT names another handler. Long mode only.
    func revalidate(_ ctx: AssistContext) {
        guard ctx.sregs.efer & (1 << 10) != 0, let handler = pageFaultHandler(ctx) else { return }
        let paging = ctx.paging
        guard let physical = try? memory.translate(handler, paging: paging, access: .debugger(.execute)).physical else { return }
        state.withLock { s in
            if let site = s.site, site.physical == physical {
                guard let byte = try? memory.read(at: physical, count: 1).first, byte != 0xCC else { return }
                // The kernel wrote a new instruction here: cover it again, if it can be.
                guard canStepOver(at: handler, ctx) else { s.site = nil; return }
                if (try? memory.write([0xCC], at: physical)) != nil { s.site?.original = byte }
                return
            }
            if let old = s.site { restore(old) }
            s.site = nil
            guard let byte = try? memory.read(at: physical, count: 1).first, byte != 0xCC,  // not the guest's own int3
                  canStepOver(at: handler, ctx) else { return }
            if (try? memory.write([0xCC], at: physical)) != nil {
                s.site = Site(linear: handler, physical: physical, original: byte)
            }
        }
    }

    /// Whether the instruction at `linear` is one the breakpoint can cover: one the assist
    /// finishes exactly wherever it stands (Linux's #PF entry starts with `clac` or a nop).
    /// Otherwise nothing is planted, and genuine #PFs never pass through the VMM.
    private func canStepOver(at linear: UInt64, _ ctx: AssistContext) -> Bool {
        guard let bytes = try? memory.readVirtual(at: linear, count: X86Decoder.maxLength, paging: ctx.paging,
                                                  access: .debugger(.execute)),
              let insn = try? X86Decoder.decode(bytes, codeSize: .bits64) else { return false }
        return Self.steppable.contains(AssistedInstruction.identify(insn))
    }

    static let steppable: [AssistedInstruction] = [.nop, .clac, .stac, .cld]

    private func restore(_ site: Site) {
        if (try? memory.read(at: site.physical, count: 1).first) == 0xCC { try? memory.write([site.original], at: site.physical) }
    }

    /// The #PF handler's address from the 64-bit IDT gate 14 (SDM 6.14.1), when present.
    private func pageFaultHandler(_ ctx: AssistContext) -> UInt64? {
        guard UInt64(ctx.sregs.idt.limit) >= 14 * 16 + 15,
              let gate = try? memory.readVirtual(at: ctx.sregs.idt.base &+ 14 * 16, count: 16, paging: ctx.paging,
                                                 access: .debugger(.read)) else { return nil }
        func word(_ i: Int) -> UInt64 { (0 ..< 8).reduce(0) { $0 | UInt64(gate[i + $1]) << UInt64(8 * $1) } }
        let low = word(0), high = word(8)
        guard low & (1 << 47) != 0 else { return nil }  // P
        return (low & 0xFFFF) | ((low >> 32) & 0xFFFF_0000) | ((high & 0xFFFF_FFFF) << 32)
    }

    // MARK: - The breakpoint

    enum BreakpointResult: Equatable {
        /// Not the repair's breakpoint: the guest's own int3.
        case notOurs
        case repairedSyscall
        /// A genuine #PF: the covered instruction (to be finished) and the guest handler runs.
        case passedPageFault(AssistedInstruction)
        case failed(String)
    }

    /// Called for every int3 emulation failure before it is taken as the guest's.
    func handleBreakpoint(_ ctx: inout AssistContext, _ assist: EmulationAssist) -> BreakpointResult {
        guard let site = state.withLock({ $0.site }),
              let here = try? memory.translate(ctx.regs.rip, paging: ctx.paging, access: .debugger(.execute)),
              here.physical == site.physical else { return .notOurs }

        if let msrs = syscallMSRs(ctx.vcpu), isBrokenSyscall(ctx, msrs) {
            enterSyscall(&ctx, msrs)
            return .repairedSyscall
        }
        // A genuine #PF: finish the instruction the breakpoint covers (its first byte from
        // the record, the rest as memory holds it now).
        guard let rest = try? memory.readVirtual(at: ctx.regs.rip &+ 1, count: X86Decoder.maxLength - 1, paging: ctx.paging,
                                                  access: .debugger(.execute)),
              let displaced = try? X86Decoder.decode([site.original] + rest, codeSize: ctx.codeSize) else {
            return .failed("the syscall repair's breakpoint covers an instruction it cannot decode at rip 0x\(String(ctx.regs.rip, radix: 16))")
        }
        let kind = AssistedInstruction.identify(displaced)
        guard Self.steppable.contains(kind) else {
            return .failed(assist.describe(displaced, ctx, why: "the kernel rewrote its #PF entry into an instruction the syscall repair cannot step over"))
        }
        do { try assist.execute(kind, displaced, &ctx) } catch {
            return .failed(assist.describe(displaced, ctx, why: "stepping over it at the #PF handler: \(error)"))
        }
        ctx.commit()
        return .passedPageFault(kind)
    }

    /// Whether the #PF frame on the stack is exactly what a broken `syscall` leaves.
    private func isBrokenSyscall(_ ctx: AssistContext, _ msrs: SyscallMSRs) -> Bool {
        let lstar = msrs.lstar, sfmask = msrs.sfmask
        // The frame with an error code: error, RIP, CS, RFLAGS, RSP, SS (SDM 6.14.2).
        guard let bytes = try? memory.readVirtual(at: ctx.regs.rsp, count: 48, paging: ctx.paging, access: .debugger(.read)) else {
            return false
        }
        func word(_ i: Int) -> UInt64 { (0 ..< 8).reduce(0) { $0 | UInt64(bytes[i * 8 + $1]) << UInt64(8 * $1) } }
        let error = word(0), rip = word(1), cs = word(2), rflags = word(3)
        let resumeFlag = AssistContext.resume
        let fromUser = cs & 3 == 3 && error & 0x4 != 0 && error & 0x2 == 0
        let atLSTAR = rip == lstar && ctx.sregs.cr2 == lstar
        // syscall: RFLAGS = R11 & ~SFMASK. The #PF delivery then pushes RF = 1 (it is a
        // fault), so RF is left out of the comparison (Linux's SFMASK includes RF).
        let flagsMatch = rflags & ~resumeFlag == ctx.regs.r11 & ~sfmask & ~resumeFlag && rflags & sfmask & ~resumeFlag == 0
        guard fromUser, atLSTAR, flagsMatch else { return false }
        // RCX is the return address: the two bytes before it must be `syscall` (0f 05),
        // read as the user would (the user's page tables are still loaded).
        guard let opcode = try? memory.readVirtual(at: ctx.regs.rcx &- 2, count: 2, paging: ctx.paging,
                                                   access: MemoryAccess(.execute, user: true, setsAccessedDirty: false)) else {
            return false
        }
        return opcode == [0x0F, 0x05]
    }

    private func syscallMSRs(_ vcpu: KVMVCPU) -> SyscallMSRs? {
        guard let values = try? vcpu.msrs([Self.msrSTAR, Self.msrLSTAR, Self.msrSFMASK]) else { return nil }
        return SyscallMSRs(star: values[0], lstar: values[1], sfmask: values[2])
    }

    /// What `syscall` does (SDM "SYSCALL", 64-bit mode): CS = STAR[47:32] & 0xFFFC and
    /// SS = that + 8, both flat with fixed attributes (not read from the GDT); RIP = LSTAR;
    /// RFLAGS = R11 & ~SFMASK. RCX and R11 the broken syscall set already; RSP stays the
    /// user's. The #PF frame the host pushed is simply abandoned.
    private func enterSyscall(_ ctx: inout AssistContext, _ msrs: SyscallMSRs) {
        let star = msrs.star, lstar = msrs.lstar, sfmask = msrs.sfmask
        guard let frame = try? memory.readVirtual(at: ctx.regs.rsp &+ 32, count: 8, paging: ctx.paging, access: .debugger(.read))
        else { return }
        let userRSP = (0 ..< 8).reduce(UInt64(0)) { $0 | UInt64(frame[$1]) << UInt64(8 * $1) }
        let selector = UInt16((star >> 32) & 0xFFFC)
        ctx.sregs.cs = .make(selector: selector, base: 0, limit: 0xFFFF_FFFF, type: 11, l: true, g: true)
        ctx.sregs.ss = .make(selector: selector &+ 8, base: 0, limit: 0xFFFF_FFFF, type: 3, db: true, g: true)
        ctx.markSpecialRegistersDirty()
        ctx.setRIP(lstar)
        ctx.setStackPointer(userRSP)
        ctx.regs.rflags = (ctx.regs.r11 & ~sfmask & ~AssistContext.resume) | 2
    }
}
