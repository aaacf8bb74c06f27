import ArgumentParser
import Boot
import KVM

struct CPUTemplates: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cpu-templates",
        abstract: "List the CPU templates for `run --cpu-template`, and what each hides on this host.")

    @Option(help: "The KVM device, to check each template against this host's KVM.")
    var device: String = "/dev/kvm"

    func run() throws {
        let kvm = try? KVMSystem(path: device)
        let supported = (try? kvm?.supportedCPUID()) ?? []
        let width = CPUTemplate.all.map(\.name.count).max() ?? 0
        let indent = String(repeating: " ", count: width + 2)
        for template in CPUTemplate.all {
            print(template.name + String(repeating: " ", count: width - template.name.count) + "  " + template.summary)
            guard !template.hiddenFeatures.isEmpty || !template.hiddenLeaves.isEmpty else { continue }
            let leaves = template.hiddenLeaves.map { "0x" + String($0, radix: 16, uppercase: true) }.joined(separator: " ")
            print(indent + "hides: " + template.hiddenFeatures.map(\.name).joined(separator: " ") + "; leaves " + leaves)
            guard let kvm, !supported.isEmpty else { continue }
            let offered = template.hiddenFeatures.filter { f in supported.contains { f.isSet(in: $0) } }.map(\.name)
            print(indent + "of these, KVM_GET_SUPPORTED_CPUID offers: " + (offered.isEmpty ? "none" : offered.joined(separator: " ")))
            if let kept = try? keptVisible(template, kvm: kvm, supported: supported), !kept.isEmpty {
                print(indent + "this KVM still shows the guest (cannot be hidden here): " + kept.map(\.name).joined(separator: " "))
            }
        }
    }

    /// Sets the template's CPUID on a scratch vCPU and reads it back.
    func keptVisible(_ template: CPUTemplate, kvm: KVMSystem, supported: [CPUIDEntry]) throws -> [CPUFeature] {
        let vcpu = try kvm.createVM().createVCPU(id: 0)
        try vcpu.setCPUID(template.apply(to: supported))
        return template.featuresStillVisible(in: try vcpu.cpuid())
    }
}
