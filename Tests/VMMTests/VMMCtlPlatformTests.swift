import Foundation
import Testing

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct VMMCtlPlatformTests {
    @Test func cpuTemplatesListsEachTemplateAndWhatItHides() throws {
        let r = try VMMCtl.run(["cpu-templates"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("host ") && r.stdout.contains("emulation-safe "))
        #expect(r.stdout.contains("hides: cx16 xsave osxsave"))
        #expect(r.stdout.contains("KVM_GET_SUPPORTED_CPUID offers"))
    }

    @Test func templateAndTopologyOptions() throws {
        let smp = try VMMCtl.run(["run", "--kernel", TestGuests.path("smp"), "--memory", "32",
                                  "--topology", "sockets=1,cores=1,threads=2", "--cpu-template", "emulation-safe"])
        #expect(smp.status == 0 && smp.stdout.contains("smp: 2 cpus"), "\(smp.all)")
        let unknown = try VMMCtl.run(["run", "--kernel", TestGuests.path("hello"), "--cpu-template", "T2"])
        #expect(unknown.status == 10 && unknown.all.contains("no CPU template named \"T2\""))
        let mismatch = try VMMCtl.run(["run", "--kernel", TestGuests.path("hello"), "--topology", "cores=2", "--cpus", "3"])
        #expect(mismatch.status == 10 && mismatch.all.contains("has 2 CPUs, but cpus is 3"))
        let bad = try VMMCtl.run(["run", "--kernel", TestGuests.path("hello"), "--topology", "dies=2"])
        #expect(bad.status == 10 && bad.all.contains("invalid CPU topology"))
    }

    @Test func multibootKernelRunsFromTheCLI() throws {
        let r = try VMMCtl.run(["run", "--kernel", TestGuests.path("multiboot"), "--memory", "32", "--cmdline", "x"])
        #expect(r.status == 0 && r.stdout == "multiboot: swift-vmm\ncmdline: x\nmodule: \nmmap: 4\n", "\(r.all)")
    }
}
