// vmm-worker: runs one VM for vmmd, in a process of its own.
//
// The daemon starts it with the control socket as descriptor 3 and nothing else open
// but /dev/null or a log on 0-2. The first message (WorkerSetup) brings, by SCM_RIGHTS,
// an open /dev/kvm, the guest-memory memfds and the kernel/initrd files; the worker
// creates the VM itself (KVM binds a VM to the address space of the process that
// created it), maps the memfds, loads the image and answers `ready`. Then it obeys the
// daemon's messages until the link closes, when it exits and the guest goes with it.
// It never opens a path: everything it touches was handed to it.
import CSys
#if canImport(Glibc)
import Glibc
#endif
import WorkerProtocol

let controlFD: Int32 = 3

/// Dies with the daemon: a worker must not outlive its supervisor.
func bindToParent() {
    guard CommandLine.arguments.count >= 3, CommandLine.arguments[1] == "--parent",
          let parent = pid_t(CommandLine.arguments[2]) else {
        workerFail("usage: vmm-worker --parent PID (started by vmmd, not by hand)")
    }
    _ = csys_set_parent_death_signal(SIGKILL)
    // The parent may have died before the line above: then we were re-parented.
    guard getppid() == parent else { exit(1) }
}

func workerFail(_ message: String) -> Never {
    let line = "vmm-worker[\(getpid())]: \(message)\n"
    _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    exit(2)
}

// `vmm-worker --print-policy`: the sandbox's allow-list as a Markdown table (the README
// carries it; a test keeps the two equal).
if CommandLine.arguments.dropFirst().first == "--print-policy" {
    print("| system call | allowed | why |")
    print("|---|---|---|")
    for entry in SyscallPolicy.entries(ownPID: 0) {
        print("| `\(entry.name)` | \(SyscallPolicy.describe(entry.rule)) | \(entry.why) |")
    }
    exit(0)
}

// `vmm-worker --print-filter`: the compiled seccomp program and the rules it was compiled
// from, one per line, for the tests' interpreter (SandboxTests).
if CommandLine.arguments.dropFirst().first == "--print-filter" {
    do {
        let entries = SyscallPolicy.entries(ownPID: getpid())
        for i in try SeccompFilter.program(entries) { print("insn \(i.code) \(i.jt) \(i.jf) \(i.k)") }
        for e in entries { print("rule \(UInt32(bitPattern: e.number)) \(SyscallPolicy.machineReadable(e.rule))") }
        exit(0)
    } catch {
        workerFail("compiling the filter: \(error)")
    }
}

bindToParent()
_ = csys_close_from(controlFD + 1)   // nothing but the link may be inherited
signal(SIGPIPE, SIG_IGN)

let link = FramedSocket(fd: controlFD)
let setup: WorkerSetup
let descriptors: [Int32]
do {
    guard let (payload, fds) = try link.receive() else { exit(0) }
    guard case .setup(let s) = try DaemonMessage.decode(payload) else {
        workerFail("the first message was not a setup")
    }
    guard fds.count == s.descriptorCount else {
        for fd in fds { close(fd) }
        link.send(WorkerMessage.setupFailed("setup carried \(fds.count) descriptors, expected \(s.descriptorCount)").encoded())
        exit(2)
    }
    setup = s
    descriptors = fds
} catch {
    workerFail("reading the setup: \(error)")
}

let worker: Worker
do {
    worker = try Worker(setup: setup, descriptors: descriptors, link: link)
} catch {
    link.send(WorkerMessage.setupFailed("\(error)").encoded())
    exit(2)
}
link.send(WorkerMessage.ready(bootFormat: worker.machine.bootFormat.rawValue).encoded())
Worker.dropCodeMappingsSoon()
worker.serve()
exit(0)
