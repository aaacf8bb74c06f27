import ArgumentParser
import Boot
import KVM

struct CPUTemplates: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cpu-templates",
        abstract: "List the CPU templates for `run --cpu-template`, and what each hides on this host.")

    @Option(help: "The KVM device, to show which hidden features this host's KVM offers.")
    var device: String = "/dev/kvm"

    func run() throws {
        let supported = (try? KVMSystem(path: device).supportedCPUID()) ?? []
        let width = CPUTemplate.all.map(\.name.count).max() ?? 0
        for template in CPUTemplate.all {
            print(template.name + String(repeating: " ", count: width - template.name.count) + "  " + template.summary)
            guard !template.hiddenFeatures.isEmpty || !template.hiddenLeaves.isEmpty else { continue }
            let names = template.hiddenFeatures.map(\.name).joined(separator: " ")
            let leaves = template.hiddenLeaves.map { "0x" + String($0, radix: 16, uppercase: true) }.joined(separator: " ")
            print(String(repeating: " ", count: width + 2) + "hides: \(names); leaves \(leaves)")
            if !supported.isEmpty {
                let offered = template.hiddenFeatures.filter { f in supported.contains { f.isSet(in: $0) } }.map(\.name)
                print(String(repeating: " ", count: width + 2) + "of which this host's KVM offers: "
                      + (offered.isEmpty ? "none" : offered.joined(separator: " ")))
            }
        }
    }
}
