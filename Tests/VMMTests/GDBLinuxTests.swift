import Foundation
import Testing

/// gdb on the project's test kernel (its vmlinux keeps its symbols), in one boot: an
/// hbreak on start_kernel from the first instruction, a backtrace and long mode there,
/// a software breakpoint in a system call that /init's commands make from user space,
/// and the guest run on to its power-off.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .enabled(if: TestKernel.available, TestKernel.skipReason),
       .serialized)
struct GDBLinuxTests {
    /// One boot, about 35 s here alone; beside the suite's other Linux boot it starved the
    /// timing-sensitive daemon tests, so it runs with the slow tests.
    @Test(.enabled(if: LinuxKernel.slow, "set VMM_SLOW_TESTS=1 for the Linux boot under gdb (about 35 s here)"),
          .timeLimit(.minutes(10)))
    func startKernelBacktraceSyscallBreakpointPowerOff() throws {
        let vmlinux = TestKernel.path("vmlinux")
        let run = try DebuggedRun(["--kernel", vmlinux, "--initrd", TestKernel.path("initramfs.cpio"),
                                   "--cmdline", "console=ttyS0 vmm_action=poweroff", "--cpus", "1", "--memory", "256",
                                   "--cpu-template", "emulation-safe"], wait: true, nice: true)
        // __x64_sys_mount(const struct pt_regs *regs): regs->cs (offset 136) says where the
        // call came from: 0x33 is user mode.
        let out = try GDBTool.run("""
            target remote 127.0.0.1:\(run.port)
            hbreak start_kernel
            continue
            bt
            info registers rip cs efer cr0
            delete
            break __x64_sys_mount
            continue
            bt
            printf "caller cs=%#lx\\n", *(unsigned long *)($rdi + 136)
            printf "kernel cs=%#lx\\n", $cs
            delete
            continue
            """, file: vmlinux, timeout: 400)
        let (status, output, log) = run.finish(timeout: 60)
        #expect(out.contains("Breakpoint 1, ") && out.contains(" in start_kernel ()") || out.contains("Breakpoint 1, start_kernel ()"), "\(out)")
        // PVH: startup_64 -> x86_64_start_kernel -> x86_64_start_reservations -> start_kernel.
        #expect(out.range(of: #"#0 +0x[0-9a-f]+ in start_kernel \(\)|#0 +start_kernel \(\)"#, options: .regularExpression) != nil, "\(out)")
        #expect(out.contains("x86_64_start_reservations") || out.contains("x86_64_start_kernel"), "bt: \(out)")
        #expect(out.range(of: #"rip +0xffffffff8[0-9a-f]+ +0xffffffff8[0-9a-f]+ <start_kernel"#, options: .regularExpression) != nil, "\(out)")
        #expect(out.range(of: #"efer +0x[0-9a-f]+ +\[[^\]]*LME[^\]]*LMA[^\]]*\]"#, options: .regularExpression) != nil, "long mode: \(out)")
        #expect(out.range(of: #"cr0 +0x[0-9a-f]+ +\[[^\]]*PE[^\]]*PG[^\]]*\]"#, options: .regularExpression) != nil, "\(out)")
        #expect(out.contains("Breakpoint 2, ") && out.contains("__x64_sys_mount"), "\(out)")
        #expect(out.contains("in do_syscall_64 ()"), "bt from the system call: \(out)")
        #expect(out.contains("caller cs=0x33"), "the system call came from user space: \(out)")
        #expect(out.contains("kernel cs=0x10"), "\(out)")
        #expect(out.contains("[Inferior 1 (Remote target) exited normally]"), "\(out)")
        #expect(output.contains("swift-vmm init: powering off"), "\(output)")
        #expect(status == 0, "\(log)")
    }
}
