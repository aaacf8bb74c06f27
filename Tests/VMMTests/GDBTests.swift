import Foundation
import Testing

/// The real gdb against the stub, as a developer uses it: `vmmctl run --gdb` and
/// `vmmctl gdb NAME` on a vmmd VM, with Guests/gdb-target (64-bit C with debug info,
/// linked in the higher half, so every address gdb uses goes through the page walk).
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct GDBTests {
    /// --gdb-wait: hardware breakpoints before and after paging, a software breakpoint,
    /// stepi, x/s, set var, a watchpoint, and the guest's own exit status at the end.
    @Test func fromTheFirstInstructionToTheExit() throws {
        let guest = try TestGuests.path("gdb-target")
        let run = try DebuggedRun(["--kernel", guest, "--debug-exit", "--memory", "32"], wait: true)
        let out = try GDBTool.run("""
            target remote 127.0.0.1:\(run.port)
            info registers rip
            hbreak *before_paging
            continue
            printf "cr0=%#x\\n", $cr0
            delete
            hbreak checkpoint
            continue
            info registers rip
            printf "paging cr0=%#x\\n", $cr0
            info registers efer
            delete
            break stepping
            continue
            printf "before=%#lx\\n", $pc
            stepi
            printf "after=%#lx\\n", $pc
            x/s greeting
            print value
            set var value = 42
            watch counter
            continue
            continue
            delete
            continue
            """, file: guest)
        let (status, output, log) = run.finish()
        // Stopped at the entry, paging off.
        #expect(out.contains("<pvh_entry>"), "\(out)")
        #expect(out.contains("Hardware assisted breakpoint 1 at 0x100029"), "\(out)")
        #expect(out.contains("cr0=0x11\n"), "\(out)")
        // A hardware breakpoint on a higher-half address set before paging, hit after.
        #expect(out.contains("Breakpoint 2, checkpoint (n=n@entry=1)"), "\(out)")
        #expect(out.range(of: #"rip +0xffffffff8010[0-9a-f]+ +0xffffffff8010[0-9a-f]+ <checkpoint>"#, options: .regularExpression) != nil, "\(out)")
        #expect(out.contains("paging cr0=0x80000011"), "\(out)")
        #expect(out.range(of: #"efer +0x500 +\[ LME LMA \]"#, options: .regularExpression) != nil, "\(out)")
        // A software breakpoint by name; stepi moves RIP past the 1-byte nop.
        #expect(out.contains("Breakpoint 3, stepping ()"), "\(out)")
        let before = try #require(out.firstMatch(of: /before=0x([0-9a-f]+)/).flatMap { UInt64($0.1, radix: 16) })
        let after = try #require(out.firstMatch(of: /after=0x([0-9a-f]+)/).flatMap { UInt64($0.1, radix: 16) })
        #expect(after == before + 1)
        // A string by virtual address, paging on (physical 0x106xxx, virtual 0xffffffff80106xxx).
        #expect(out.range(of: #"0xffffffff801[0-9a-f]+ <greeting>:\s+"hello from the gdb target""#, options: .regularExpression) != nil, "\(out)")
        #expect(out.contains("$1 = 7"), "\(out)")
        // The watchpoint stops on each write that changes counter.
        #expect(out.contains("Hardware watchpoint 4: counter"), "\(out)")
        #expect(out.contains("Old value = 0\nNew value = 1"), "\(out)")
        #expect(out.contains("Old value = 1\nNew value = 2"), "\(out)")
        // set var shows in the guest's output and its exit status: (42 << 1) | 1.
        #expect(out.contains("exited with code 0125"), "\(out)")
        #expect(output.contains("value=42\n"), "\(output)")
        #expect(status == 85, "\(log)")
    }

    /// Attaching to a running 2-vCPU guest: both vCPUs as threads, the other's
    /// registers, Ctrl-C of a spinning guest, a breakpoint by name, detach.
    @Test func twoVCPUsInterruptBreakDetach() throws {
        let guest = try TestGuests.path("gdb-target")
        let run = try DebuggedRun(["--kernel", guest, "--debug-exit", "--memory", "32", "--cpus", "2", "--cmdline", "smp spin"])
        // Attach once the guest spins (it prints "spinning" first).
        for _ in 0 ..< 300 { usleep(10_000) }
        let out = try GDBTool.run("""
            target remote 127.0.0.1:\(run.port)
            info threads
            thread 2
            printf "ap rbx=%#x\\n", $rbx
            thread 1
            \(GDBTool.interrupt(after: 1.5))
            continue
            printf "spins=%d\\n", spins
            break checkpoint
            set var keep_spinning = 0
            set var value = 33
            continue
            bt
            detach
            """, file: guest)
        let (status, output, log) = run.finish()
        #expect(out.range(of: #"1 +Thread 1 \(vCPU 0, APIC ID 0, 64-bit mode, CPL 0\)"#, options: .regularExpression) != nil, "\(out)")
        #expect(out.range(of: #"2 +Thread 2 \(vCPU 1, APIC ID 1, real mode, halted\)"#, options: .regularExpression) != nil, "\(out)")
        #expect(out.contains("ap rbx=0xa11ce"), "\(out)")
        #expect(out.contains("received signal SIGINT, Interrupt."), "\(out)")
        let spins = try #require(out.firstMatch(of: /spins=(\d+)/).flatMap { Int($0.1) })
        #expect(spins > 0)
        #expect(out.contains("Thread 1 hit Breakpoint 1, checkpoint (n=n@entry=2)"), "\(out)")
        #expect(out.contains("in c_main"), "bt: \(out)")
        #expect(out.contains("[Inferior 1 (Remote target) detached]"), "\(out)")
        // After detach the guest finishes on its own, with its own status.
        #expect(status == 67, "\(log)")
        #expect(output.hasSuffix("spinning\nspun\nbye\n"), "\(output)")
    }

    /// `target remote | vmmctl gdb NAME` on a vmmd VM; another user is refused.
    @Test func throughTheDaemon() throws {
        let d = try DaemonFixture()
        chmod(d.socket, 0o666)  // so that uid 4242 reaches the daemon at all
        let guest = try TestGuests.path("gdb-target")
        let created = d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("dbg", guest: "gdb-target",
                                                                                  extra: #","cmdline":"spin","debug_exit":true"#))
        #expect(created.status == 201, "\(created.body)")
        #expect(d.eventually { d.ctl(["console", "--no-follow", "dbg"]).stdout.contains("spinning") })
        // Not the owner: refused as if there were no such VM.
        let stranger = d.ctl(["gdb", "dbg"], asUID: 4242)
        #expect(stranger.status == 1, "\(stranger.all)")
        #expect(stranger.all.contains("no VM named 'dbg'"), "\(stranger.all)")
        let out = try GDBTool.run("""
            target remote | \(DaemonFixture.vmmctl) gdb --socket \(d.socket) dbg
            info threads
            break checkpoint
            set var keep_spinning = 0
            continue
            print value
            detach
            """, file: guest)
        #expect(out.contains("Thread 1 (vCPU 0, APIC ID 0, 64-bit mode, CPL 0)"), "\(out)")
        #expect(out.contains("Breakpoint 1, checkpoint (n=n@entry=2)"), "\(out)")
        #expect(out.contains("$1 = 7"), "\(out)")
        #expect(out.contains("[Inferior 1 (Remote target) detached]"), "\(out)")
        #expect(d.eventually(10) { (d.vm("dbg")?["last_exit"] as? [String: Any])?["status"] as? Int == 15 }, "\(d.vm("dbg") ?? [:])")
        #expect(d.ctl(["console", "--no-follow", "dbg"]).stdout.hasSuffix("spun\nbye\n"))
        // The upgrade needs its header; another client may attach after the first left.
        let plain = d.api("GET", "/v1/vms/dbg/gdb")
        #expect(plain.status == 400, "\(plain.body)")
    }
}
