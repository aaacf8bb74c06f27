import Foundation
import KVMRef

/// Whole processes, start to reap, as a user feels them: `vmmctl run` of the hello guest
/// against `kvm_ref run` (the same VM on raw KVM in C) and QEMU microvm on KVM, in
/// alternating runs (each round in a rotated order, so none always follows another);
/// `vmmctl --help` (nothing but start-up) against the C reference's usage message; and
/// 100,000 port-I/O exits through `vmmctl run` against `kvm_ref run` of the same guest.
/// Each program is timed by the same posix_spawn/wait4 code (process_timer.c), with its
/// output on /dev/null.
struct ColdStartBenchmark {
    let work: String
    let reference: String
    let runs: Int

    struct Program {
        let name: String
        let arguments: [String]
        /// The exit status a correct run ends with.
        let status: Int32
    }

    /// Medians of wall-clock and CPU milliseconds, by program, in the programs' order.
    func measure(_ programs: [Program], runs: Int) -> [(wall: Double, cpu: Double)] {
        var wall = Array(repeating: [Double](), count: programs.count)
        var cpu = wall
        for round in 0 ..< runs {
            for k in 0 ..< programs.count {
                let i = (k + round) % programs.count
                var status: Int32 = 0
                var cpuNs: UInt64 = 0
                let ns = kvmref_time_command(programs[i].arguments.joined(separator: "\u{1F}"), &status, &cpuNs)
                guard ns > 0 else { die("cannot start \(programs[i].arguments[0])") }
                guard status == programs[i].status else {
                    die("\(programs[i].arguments.joined(separator: " ")) exited with \(status), expected \(programs[i].status)")
                }
                wall[i].append(Double(ns) / 1e6)
                cpu[i].append(Double(cpuNs) / 1e6)
            }
        }
        return zip(wall, cpu).map { (median($0), median($1)) }
    }

    func run() {
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        let vmmctl = bin + "/vmmctl"
        guard FileManager.default.isExecutableFile(atPath: vmmctl) else {
            die("\(vmmctl) is missing: build everything first (swift build -c release)")
        }
        let hello = work + "/hello.elf", exits = work + "/bench-100k.elf"
        let run = [vmmctl, "run", "--memory", "64", "--kernel"]
        var programs = [
            // The C reference with the split irqchip, as the vmmctl run it is compared with.
            Program(name: "C reference (kvm_ref --irqchip=split run)", arguments: [reference, "--irqchip=split", "run", hello], status: 0),
            Program(name: "vmmctl run (the split irqchip, the default)", arguments: run + [hello], status: 0),
            Program(name: "vmmctl run --irqchip kernel (KVM's irqchip and PIT)", arguments: run + [hello, "--irqchip", "kernel"], status: 0),
        ]
        // QEMU microvm has no ACPI power-off, so hello ends through isa-debug-exit 0: status 1.
        let qemu = ["/usr/bin/qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64"]
            .first { FileManager.default.isExecutableFile(atPath: $0) }
        if let qemu {
            programs.append(Program(name: "QEMU microvm (KVM)", arguments: [
                qemu, "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off", "-accel", "kvm", "-m", "64",
                "-display", "none", "-serial", "stdio", "-monitor", "none", "-nodefaults", "-no-user-config",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", hello,
            ], status: 1))
        }
        print("cold start, whole processes (\(runs) alternating runs each, medians of wall clock and CPU time):")
        let boot = measure(programs, runs: runs)
        for (program, m) in zip(programs, boot) {
            print(String(format: "  %@: %.2f ms wall, %.2f ms CPU", program.name, m.wall, m.cpu))
        }
        let toC = boot[1].wall / boot[0].wall
        print(String(format: "  vmmctl run of hello / C reference: %.2f (target <= 2) %@", toC, verdict(toC <= 2)))
        if qemu != nil {
            let toQEMU = boot[1].wall / boot[3].wall
            print(String(format: "  vmmctl run of hello / QEMU microvm: %.3f (target <= 0.1) %@", toQEMU, verdict(toQEMU <= 0.1)))
        }

        // kvm_ref without arguments prints its usage and ends with status 2.
        let help = measure([Program(name: "C reference usage", arguments: [reference], status: 2),
                            Program(name: "vmmctl --help", arguments: [vmmctl, "--help"], status: 0)], runs: runs)
        print(String(format: "  vmmctl --help: %.2f ms wall, %.2f ms CPU (target <= 5 ms) %@; the C reference's usage message: %.2f ms",
                     help[1].wall, help[1].cpu, verdict(help[1].wall <= 5), help[0].wall))

        // bench-100k.elf ends with a debug-exit write of 0: vmmctl's status (0 << 1) | 1.
        let loops = measure([Program(name: "C", arguments: [reference, "run", exits], status: 0),
                             Program(name: "vmmctl", arguments: run + [exits, "--debug-exit"], status: 1)],
                            runs: max(3, runs / 3))
        let ratio = loops[1].wall / loops[0].wall
        print(String(format: "  100,000 port-I/O exits, whole process: C %.1f ms, vmmctl run %.1f ms, ratio %.3f (target <= 1.03) %@",
                     loops[0].wall, loops[1].wall, ratio, verdict(ratio <= 1.03)))
    }
}
