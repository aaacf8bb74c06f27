// vmm-handle-example: run a guest in this process, as an unprivileged user, with a
// /dev/kvm descriptor brokered by vmmd.
//
//     vmm-handle-example --kernel hello.elf [--name NAME] [--memory MIB] [--socket PATH]
//
// It shows first that this user cannot open /dev/kvm itself, then asks vmmd for a
// named VM (vmmd checks policy and quota and records the name), runs the kernel here
// with COM1 on stdout and stdin forwarded to it, and exits with the guest's status. The
// name disappears from `vmmctl list` when this process ends.
import Devices
import Foundation
import KVM
import VMM
import VMMClient

var kernelPath: String?
var name = "handle-example"
var memory: UInt64 = 32
var socket = VMHandle.defaultSocket
var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    guard let value = arguments.popFirst() else { break }
    switch flag {
    case "--kernel": kernelPath = value
    case "--name": name = value
    case "--memory": memory = UInt64(value) ?? memory
    case "--socket": socket = value
    default: break
    }
}
/// Our lines go straight to fd 1, unbuffered, as the guest's COM1 output does, so the
/// two come out in order.
func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = write(STDOUT_FILENO, bytes, bytes.count)
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("vmm-handle-example: \(message)\n".utf8))
    exit(10)
}
guard let kernelPath, let kernel = FileManager.default.contents(atPath: kernelPath) else {
    fail("usage: vmm-handle-example --kernel PATH [--name NAME] [--memory MIB] [--socket PATH]")
}

let direct = open("/dev/kvm", O_RDWR | O_CLOEXEC)
if direct >= 0 {
    close(direct)
    say("note: this user can open /dev/kvm itself; the handle is brokered anyway")
} else {
    say("uid \(getuid()) cannot open /dev/kvm: \(String(cString: strerror(errno))); asking vmmd for a handle")
}

let handle: VMHandle
do {
    handle = try VMHandle.open(name: name, memoryMiB: memory, socketPath: socket)
} catch {
    fail("vmmd refused the handle: \(error)")
}
say("vmmd granted '\(handle.name)' to uid \(handle.ownerUID); running it in pid \(getpid())")

var config = MachineConfig()
config.name = name
config.memoryMiB = memory
config.kernel = [UInt8](kernel)
config.serialOutput = FileDescriptorOutput(fd: STDOUT_FILENO)
let machine: Machine
do {
    machine = try Machine(config: config, kvm: handle.kvm)
} catch {
    fail("\(error)")
}
// Keystrokes to the guest (the echo guest uses them).
machine.forwardInput(fromDescriptor: STDIN_FILENO)
let reason: StopReason
do {
    reason = try machine.run()
} catch {
    fail("\(error)")
}
say("vm '\(name)' ended: \(reason)")
handle.close()
exit(reason.exitStatus)
