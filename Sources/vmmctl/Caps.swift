import ArgumentParser
import KVM

struct Caps: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "caps",
        abstract: "List what this host's KVM supports: capabilities by name and value.")

    @Option(help: "The KVM device.")
    var device: String = "/dev/kvm"

    func run() throws {
        let kvm: KVMSystem
        do { kvm = try KVMSystem(path: device) } catch { fail("\(error)") }
        print("KVM API version \((try? kvm.apiVersion()) ?? 0), vCPU mmap size \((try? kvm.vcpuMmapSize()) ?? 0) bytes")
        let caps = kvm.capabilities()
        let width = caps.map { $0.0.name.count }.max() ?? 0
        for (cap, value) in caps {
            print("KVM_CAP_" + cap.name + String(repeating: " ", count: width - cap.name.count) + "  \(value)")
        }
        print("\(caps.count) capabilities; \((try? kvm.supportedCPUID().count) ?? 0) CPUID leaves; \((try? kvm.msrIndexList().count) ?? 0) MSRs")
    }
}
