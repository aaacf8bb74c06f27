/// The guest `vmmctl demo` runs: a PVH ELF generated here, so a newcomer needs no file.
///
/// It greets on COM1, prints the command line it finds through `hvm_start_info`
/// (proving the boot data is right), and powers off through the ACPI sleep-control port.
/// About 60 instructions in all, since guest code at CPL 0 may be emulated.
public enum DemoGuest {
    public static let loadAddress: UInt32 = 0x10_0000
    public static let greeting = "Hello from the swift-vmm demo guest, booted through PVH on /dev/kvm.\n"

    /// The ELF image.
    public static func image() -> [UInt8] {
        var a = Assembler(origin: loadAddress)
        a.movESP(imm: "stack")                  // no stack is given at PVH entry
        a.movESI(imm: "greeting")
        a.call("print")
        a.movESI(imm: "cmdlineLabel")
        a.call("print")
        a.bytes(0x8B, 0x73, 0x18)               // mov esi, [ebx + 24]: start_info.cmdline_paddr
        a.bytes(0x85, 0xF6)                     // test esi, esi
        a.jz8("nocmdline")
        a.call("print")
        a.label("nocmdline")
        a.movESI(imm: "newline")
        a.call("print")
        a.bytes(0x66, 0xBA, 0x00, 0x06)         // mov dx, 0x600: ACPI SLEEP_CONTROL_REG
        a.bytes(0xB0, 0x34)                     // mov al, SLP_EN | SLP_TYP(5): enter S5
        a.bytes(0xEE)                           // out dx, al
        a.label("hang")
        a.bytes(0xFA, 0xF4)                     // cli; hlt
        a.jmp8("hang")
        a.label("print")                        // print the NUL-terminated string at esi
        a.bytes(0x66, 0xBA, 0xF8, 0x03)         // mov dx, 0x3F8: COM1 THR
        a.label("next")
        a.bytes(0xAC)                           // lodsb
        a.bytes(0x84, 0xC0)                     // test al, al
        a.jz8("done")
        a.bytes(0xEE)                           // out dx, al
        a.jmp8("next")
        a.label("done")
        a.bytes(0xC3)                           // ret
        a.label("greeting"); a.string(greeting)
        a.label("cmdlineLabel"); a.string("command line: ")
        a.label("newline"); a.string("\n")
        a.align(16)
        let codeSize = a.size
        a.label("stack", at: codeSize + 256)    // 256 bytes of stack in the bss
        var elf = ELFWriter(loadAddress: loadAddress, code: a.assemble())
        elf.bssSize = 256
        return elf.bytes()
    }
}

/// Just enough of an x86 assembler for the demo: raw bytes, labels, and the few
/// instructions whose operands are label addresses or relative offsets.
struct Assembler {
    let origin: UInt32
    private var out: [UInt8] = []
    private var labels: [String: Int] = [:]
    private var fixups: [(at: Int, label: String, kind: Fixup)] = []
    enum Fixup { case absolute32, relative32, relative8 }

    init(origin: UInt32) { self.origin = origin }

    var size: Int { out.count }
    mutating func bytes(_ b: UInt8...) { out += b }
    mutating func string(_ s: String) { out += Array(s.utf8) + [0] }
    mutating func align(_ n: Int) { while out.count % n != 0 { out.append(0x90) } }
    mutating func label(_ name: String, at offset: Int? = nil) { labels[name] = offset ?? out.count }
    mutating func movESP(imm label: String) { out.append(0xBC); fix(label, .absolute32) }
    mutating func movESI(imm label: String) { out.append(0xBE); fix(label, .absolute32) }
    mutating func call(_ label: String) { out.append(0xE8); fix(label, .relative32) }
    mutating func jz8(_ label: String) { out.append(0x74); fix(label, .relative8) }
    mutating func jmp8(_ label: String) { out.append(0xEB); fix(label, .relative8) }

    private mutating func fix(_ label: String, _ kind: Fixup) {
        fixups.append((out.count, label, kind))
        out += kind == .relative8 ? [0] : [0, 0, 0, 0]
    }

    /// Resolves the fixups. Labels are all defined by the code above, so a missing one
    /// is a programming error caught by the demo test; it assembles as 0 here.
    func assemble() -> [UInt8] {
        var code = out
        for f in fixups {
            let target = labels[f.label] ?? 0
            switch f.kind {
            case .absolute32:
                code.replaceSubrange(f.at ..< f.at + 4, with: le32(origin &+ UInt32(target)))
            case .relative32:
                code.replaceSubrange(f.at ..< f.at + 4, with: le32(UInt32(bitPattern: Int32(target - (f.at + 4)))))
            case .relative8:
                code[f.at] = UInt8(bitPattern: Int8(clamping: target - (f.at + 1)))
            }
        }
        return code
    }
}
