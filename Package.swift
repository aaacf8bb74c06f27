// swift-tools-version: 6.0
import PackageDescription

/// The Swift libraries, Foundation among them, linked into an executable (glibc stays
/// shared, so NSS lookups work). Foundation's static archives are named because a
/// dynamically built module only autolinks the shared ones. Not position-independent:
/// as a PIE, vmmd had 98,198 relative relocations for ld.so to apply at every start (the
/// pages they dirty, a third of its start-up CPU); linked at a fixed address it has 964.
let staticSwiftAndFoundation: [LinkerSetting] = [
    .unsafeFlags(["-static-stdlib", "-Xlinker", "-lCoreFoundation", "-Xlinker", "-l_FoundationICU",
                  "-Xlinker", "-lFoundationInternationalization", "-Xlinker", "-lFoundationEssentials",
                  "-Xlinker", "-l_FoundationCShims", "-Xlinker", "-l_FoundationCollections",
                  "-Xlinker", "-lstdc++", "-Xclang-linker", "-no-pie"]),
]

/// vmmd's: the same, with FoundationEssentials only (vmmd and VMMService use no more of
/// Foundation). Without Foundation's internationalisation and ICU the binary is half the
/// size, and every first use of a generic type at start-up scans fewer conformance
/// records (~2 ms of the daemon's start-up CPU).
let staticSwiftAndFoundationEssentials: [LinkerSetting] = [
    .unsafeFlags(["-static-stdlib", "-Xlinker", "-lFoundationEssentials", "-Xlinker", "-l_FoundationCShims",
                  "-Xlinker", "-l_FoundationCollections", "-Xclang-linker", "-no-pie"]),
]

let package = Package(
    name: "swift-vmm",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "VMM", targets: ["VMM"]),
        .executable(name: "vmmctl", targets: ["vmmctl"]),
        .executable(name: "vmm-bench", targets: ["VMMBench"]),
        .executable(name: "vmmd", targets: ["vmmd"]),
        .executable(name: "vmm-worker", targets: ["VMMWorker"]),
        .executable(name: "vmm-handle-example", targets: ["HandleExample"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // Re-exports <linux/kvm.h>, ioctl request numbers and a non-variadic ioctl().
        .target(name: "CKVM"),
        // One Swift type per KVM file descriptor.
        .target(name: "KVM", dependencies: ["CKVM"]),
        // Atomic compare-exchange on guest memory (8 and 16 bytes), for GuestMemory only.
        .target(name: "CGuestAtomics"),
        // Guest physical memory: memfd-backed segments with guard regions; the page walk;
        // file I/O straight into guest memory, one call at a time or batched on an io_uring.
        .target(name: "GuestMemory", dependencies: ["CKVM", "CGuestAtomics", "CSys"]),
        // The snapshot file format (state file, sections, manifest), pure and fuzzable.
        .target(name: "Snapshot", dependencies: ["CKVM"]),
        // Port-I/O and MMIO buses and the device models.
        .target(name: "Devices", dependencies: ["GuestMemory", "CKVM", "CSys", "Snapshot"]),
        // Image loaders, boot data, initial CPU state.
        .target(name: "Boot", dependencies: ["GuestMemory", "KVM"]),
        // The guest-to-VMM call ABI, the dispatch table and the built-in calls.
        .target(name: "Hypercalls", dependencies: ["GuestMemory"]),
        // Machine: memory + vCPUs + devices + boot.
        .target(name: "VMM", dependencies: [
            "KVM", "GuestMemory", "Devices", "Boot", "Hypercalls", "Snapshot",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The GDB remote serial protocol stub: packets, target description, the session
        // over a machine's debugger, and its TCP/Unix listener.
        .target(name: "Debug", dependencies: ["VMM", "KVM", "GuestMemory", "CSys"]),
        // Small Linux helpers for the daemon and workers: SCM_RIGHTS, peer credentials,
        // pidfds, per-thread fs identity, spawning a worker.
        .target(name: "CSys"),
        // getpwnam/getgrnam for vmmd, kept out of CSys so the static worker links no NSS.
        .target(name: "CUserDB"),
        // The daemon <-> worker messages and their framing (no Foundation: workers stay small).
        .target(name: "WorkerProtocol", dependencies: ["CSys"]),
        // The HTTP API's models, errors and routes, shared by vmmd and its clients.
        .target(name: "VMMAPI"),
        // The long-option scanner of the executables' fast parses (vmmctl run, vmmd).
        .target(name: "LongOptions"),
        // Everything vmmd knows: named VMs, owners, lifetimes, workers, persistence.
        .target(name: "VMMService", dependencies: [
            "VMMAPI", "WorkerProtocol", "CSys", "KVM", "GuestMemory", "Boot", "Snapshot",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // An HTTP client for the daemon's Unix socket (vmmctl, tests, benchmark).
        .target(name: "VMMClient", dependencies: [
            "VMMAPI", "KVM", "CSys",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .executableTarget(
            name: "vmmd",
            dependencies: [
                "VMMService", "VMMAPI", "KVM", "CSys", "CUserDB", "WorkerProtocol", "LongOptions",
                // The host probes (HostEmulation, GuestDebugSupport) whose answers the
                // workers get in their setup.
                "VMM",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            // Loading and relocating the shared Swift libraries was ~2 ms of vmmd's start to
            // a listening socket; glibc stays shared, so NSS lookups of the worker user work.
            linkerSettings: staticSwiftAndFoundationEssentials
        ),
        // One VM per process, started by vmmd. Deliberately without Foundation, and
        // linked statically: no shared Swift runtime to map and relocate per worker,
        // which keeps its resident size (the per-VM overhead) small.
        .executableTarget(
            name: "VMMWorker",
            dependencies: ["VMM", "KVM", "GuestMemory", "Devices", "Boot", "WorkerProtocol", "CSys", "Debug", "Snapshot",
                           .product(name: "Logging", package: "swift-log")],
            linkerSettings: [.unsafeFlags(["-static-executable"])]
        ),
        // Example: an unprivileged program that gets a VM handle from vmmd and runs a guest
        // in its own process.
        .executableTarget(
            name: "HandleExample",
            dependencies: ["VMM", "VMMClient", "Devices", "KVM"],
            path: "Examples/HandleExample"
        ),
        .executableTarget(
            name: "vmmctl",
            dependencies: [
                "VMM", "KVM", "Boot", "Devices", "VMMAPI", "VMMClient", "Debug", "CSys", "Snapshot", "LongOptions",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // Static, as the worker: `vmmctl run` is a VM's whole cold start, and mapping and
            // relocating shared Swift libraries costs more than the VM. vmmctl uses no more of
            // Foundation than FoundationEssentials, whose own libraries are named here because
            // a dynamically built module only autolinks the shared one.
            linkerSettings: [.unsafeFlags(["-static-executable", "-Xlinker", "-lFoundationEssentials",
                                           "-Xlinker", "-l_FoundationCShims", "-Xlinker", "-l_FoundationCollections"])]
        ),
        // The C reference VM (Benchmarks/ref/kvm_ref.c) as a library, so the benchmark can
        // interleave C and Swift batches in one process, and the process timer of its
        // cold-start mode. Used by nothing else.
        .target(
            name: "KVMRef",
            path: "Benchmarks/ref",
            sources: ["kvm_ref.c", "process_timer.c"],
            publicHeadersPath: "include",
            cSettings: [.define("KVMREF_LIBRARY")]
        ),
        .executableTarget(
            name: "VMMBench",
            dependencies: ["VMM", "KVM", "CKVM", "Boot", "Devices", "Hypercalls", "GuestMemory", "KVMRef", "VMMAPI", "VMMClient", "Snapshot", "CSys",
                           .product(name: "NIOHTTP1", package: "swift-nio"),
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            // Linked as vmmd is (Swift and Foundation in the binary): the restore figure runs
            // in a fresh vmm-bench process, and the programs that restore (vmmctl, the
            // worker) are static. With the shared Swift libraries the child took 8.95 ms
            // from spawn to the guest's first instruction (5.36 ms static), and the restore
            // itself 0.25 ms more (conformance scans over every loaded library).
            linkerSettings: staticSwiftAndFoundation
        ),
        .testTarget(
            name: "VMMTests",
            dependencies: ["KVM", "GuestMemory", "Devices", "Boot", "VMM", "Hypercalls", "VMMAPI", "VMMService",
                           "VMMClient", "WorkerProtocol", "Debug", "CSys", "Snapshot"],
            path: "Tests/VMMTests"
        ),
    ],
    swiftLanguageModes: [.v6]
)
