import Foundation
import Testing

/// Snapshots of the real test kernel, in `TestKernelBootTests` (serialized: no two Linux
/// boots share the CPUs). One boot gives both snapshots; the restores are short.
extension TestKernelBootTests {
    /// One `vmmctl run` boot of the test kernel (2 vCPUs, a virtio-blk disk, the emulation
    /// assist and its syscall repair on this project's hosts; /init runs a shell on the
    /// console) takes a full snapshot mid-boot and a diff on top of it while the shell
    /// waits for a line, then reads the disk and powers off. Then, each in a new process:
    /// - the diff restores in `vmmctl run`: the shell answers, reads and writes the disk
    ///   (the write reaches the image file), runs programs (fork, exec, syscalls through
    ///   the restored repair) and powers off (status 0), with no boot in between;
    ///   (A Linux snapshot taken and restored by vmmd: TestKernelBootTests.testKernelRestoresUnderVmmd.)
    /// - the mid-boot snapshot restores and the kernel goes on to print the same later
    ///   lines as the original boot did (timings aside), reaches /init and powers off
    ///   (one run in five here, a user program faults in its TLS after it: a known issue).
    @Test(.timeLimit(.minutes(20))) func snapshotsOfTheTestKernel() async throws {
        let scratch = try SnapshotScratch()
        let midBoot = scratch.path("snap-1"), atPrompt = scratch.path("snap-2")
        let disk = scratch.path("disk.img"), initrd = scratch.path("initramfs.cpio")
        try Self.makeDisk(disk)
        let made = runProcess(packageRoot.appendingPathComponent("scripts/make-initramfs.sh").path,
                              ["--out", initrd, "--applets", "sh mount cat cut grep ls sleep poweroff head dd sync"])
        try #require(made.status == 0, "make-initramfs.sh: \(made.output)")
        let boot = try ConsoleBoot(arguments: ["--kernel", TestKernel.path("vmlinux"), "--initrd", initrd,
                                               "--cmdline", "console=ttyS0 vmm_action=shell", "--cpus", "2", "--memory", "256",
                                               "--cpu-template", "emulation-safe", "--disk", disk,
                                               "--track-dirty-pages", "--snapshot-diff", "--snapshot-to", scratch.path("snap-%n")])
        func fail(_ what: String, _ run: ConsoleBoot) -> Comment {
            "\(what) after \(String(format: "%.0f", run.seconds)) s\n--- console tail ---\n\(run.text.suffix(5000))"
        }
        func snapshot(_ directory: String) async -> Bool {
            kill(boot.process.processIdentifier, SIGUSR2)
            return await boot.wait(for: "written to \(directory) ", deadline: boot.seconds + 60) != nil
        }

        // Mid-boot: after SMP bring-up, well before /init.
        guard await boot.wait(for: "devtmpfs: initialized", deadline: 400) != nil else {
            Issue.record(fail("the kernel never got to devtmpfs", boot)); _ = await boot.finish(deadline: 0); return
        }
        #expect(await snapshot(midBoot), fail("no mid-boot snapshot", boot))
        // What the guest printed after the snapshot (serial and vmmctl's own lines reach the
        // pipe in the order they were written).
        let snapshotMark = boot.text.range(of: "written to \(midBoot) ").map { boot.text.distance(from: boot.text.startIndex, to: $0.upperBound) } ?? 0
        guard await Self.shellAnswers(boot, deadline: 600) else {
            Issue.record(fail("no shell", boot)); _ = await boot.finish(deadline: 0); return
        }
        #expect(await snapshot(atPrompt), fail("no snapshot at the shell", boot))
        #expect(boot.text.contains("written to \(atPrompt) (diff,"), fail("the second snapshot is not a diff", boot))
        boot.type("head -c 15 /dev/vda; echo; poweroff -f")
        #expect(await boot.wait(for: Self.diskText, deadline: boot.seconds + 60) != nil, fail("the original did not read its disk", boot))
        #expect(await boot.finish(deadline: boot.seconds + 120) == 0, fail("the original did not power off", boot))
        if Self.onlyTheHostsStartupCrash(boot.text) {
            withKnownIssue("a program died at its start in the original boot (this host's TLS fault)", isIntermittent: true) {
                Issue.record(fail("a program crashed in the original", boot))
            }
        } else {
            #expect(!boot.text.contains("segfault"), fail("a program crashed in the original", boot))
        }
        let later = Self.laterLines(String(boot.text.dropFirst(snapshotMark)).split(maxSplits: 1, whereSeparator: \.isNewline).last.map(String.init) ?? "")

        // The diff at the shell, in a new vmmctl process: the disk, programs, power-off.
        let restored = try ConsoleBoot(arguments: ["--restore", atPrompt])
        restored.type("head -c 15 /dev/vda; echo")
        let answered = await restored.wait(for: Self.diskText, deadline: 60)
        #expect(answered != nil, fail("the restored shell did not read the disk", restored))
        restored.type("echo restored-$((6*7)) | dd of=/dev/vda bs=512 seek=1 conv=sync 2>/dev/null; sync; echo wrote-$((2*3))")
        #expect(await restored.wait(for: "wrote-6", deadline: 120) != nil, fail("the restored shell did not write the disk", restored))
        restored.type("echo cpus-$(grep -c ^processor /proc/cpuinfo) $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)")
        #expect(await restored.wait(for: "cpus-2 ", deadline: 120) != nil, fail("the restored guest does not see 2 CPUs", restored))
        restored.type("poweroff -f")
        #expect(await restored.finish(deadline: 180) == 0, fail("the restore did not power off", restored))
        #expect(!restored.text.contains("Linux version"), fail("the restore booted", restored))
        #expect(!restored.text.contains("segfault"), fail("a program crashed after the restore", restored))
        let written = try FileHandle(forReadingFrom: URL(fileURLWithPath: disk))
        try written.seek(toOffset: 512)
        #expect(String(decoding: written.readData(ofLength: 12), as: UTF8.self) == "restored-42\n", "the restored guest's write is not in the image")
        try written.close()
        // (vmmctl's line may follow the shell's prompt on the same line.)
        for line in boot.text.split(separator: "\n") {
            if let at = line.range(of: "vmmctl: snapshot ") { print("test kernel: \(line[at.lowerBound...])") }
        }
        print("test kernel restored at the shell: the disk read back \(String(format: "%.2f", answered ?? 0)) s after vmmctl started, powered off after \(String(format: "%.1f", restored.seconds)) s")

        // Mid-boot, in a new process: the kernel goes on where it was.
        let resumed = try ConsoleBoot(arguments: ["--restore", midBoot])
        #expect(await Self.shellAnswers(resumed, deadline: 600), fail("the mid-boot restore never reached the shell", resumed))
        resumed.type("poweroff -f")
        #expect(await resumed.finish(deadline: resumed.seconds + 120) == 0, fail("the mid-boot restore did not power off", resumed))
        #expect(!resumed.text.contains("Linux version"), fail("the mid-boot restore booted again", resumed))
        let again = Set(Self.laterLines(resumed.text))
        let missing = later.filter { !again.contains($0) }
        if resumed.text.contains("segfault") {
            // Known, not fixed: now and then a user program (mount, in /init) faults in its
            // TLS at its start here, as it does in plain boots on this host (README, "The
            // KVM on these machines"); the at-the-shell restore has not shown it.
            withKnownIssue("a user program faulted in its TLS after the mid-boot restore", isIntermittent: true) {
                Issue.record(fail("a program crashed after the mid-boot restore", resumed))
            }
        } else {
            #expect(later.count >= 20 && missing.isEmpty,
                    "\(later.count) lines after the mid-boot snapshot; missing from the restore:\n\(missing.joined(separator: "\n"))")
        }
        print("test kernel restored mid-boot: \(later.count) later lines as the original's, powered off after \(String(format: "%.1f", resumed.seconds)) s")
    }

    /// What the test disk starts with (the rest of its 1 MiB is zeros).
    static let diskText = "disk-says-hello"

    static func makeDisk(_ path: String) throws {
        var bytes = Array(diskText.utf8)
        bytes += [UInt8](repeating: 0, count: (1 << 20) - bytes.count)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// Waits for /init's report, then until its shell answers a line (arithmetic, so that
    /// the console's echo of the line is not taken for the answer).
    static func shellAnswers(_ run: ConsoleBoot, deadline: TimeInterval) async -> Bool {
        guard await run.wait(for: "swift-vmm init: uptime", deadline: deadline) != nil else { return false }
        run.type("echo ready-$((1+1))")
        return await run.wait(for: "ready-2", deadline: run.seconds + 120) != nil
    }

    /// Whether every crash in `text` is the one this project's hosts inflict now and then
    /// on a process at its start (README, "The KVM on these machines"): a busybox process
    /// dies reading its TLS locale pointer as 0 (`mov %fs:(%rax),%rax; mov (%rax),%rax`).
    /// Any other crash is a failure. The test initramfs's /init runs what it needs again.
    static func onlyTheHostsStartupCrash(_ text: String) -> Bool {
        let crashes = text.split(whereSeparator: \.isNewline).filter { $0.contains("segfault at") }
        return !crashes.isEmpty && text.contains("64 48 8b 00 <48> 8b 00")
            && crashes.allSatisfy { $0.contains("segfault at 0 ") && $0.contains(" in busybox[") }
    }

    /// The kernel's and /init's lines, without timestamps, leaving out the ones that
    /// report timings (long numbers: "took 24255579 ns", sched_clock's offsets, uptime)
    /// and this host's start-up crash with /init's retry of it (one boot has it, the
    /// other not: `onlyTheHostsStartupCrash`).
    static func laterLines(_ text: String) -> [String] {
        text.split(whereSeparator: \.isNewline).compactMap { raw -> String? in
            var line = String(raw)
            if line.hasPrefix("["), let close = line.firstIndex(of: "]") {
                line = String(line[line.index(after: close)...]).trimmingCharacters(in: .whitespaces)
            } else if !line.hasPrefix("swift-vmm init:") {
                return nil
            }
            guard line.range(of: #"\d{5,}"#, options: .regularExpression) == nil, !line.contains("uptime"),
                  !line.contains("took "), !line.contains("segfault"), !line.hasPrefix("Code:"),
                  !line.contains("crashed at its start") else { return nil }
            return line
        }
    }
}
