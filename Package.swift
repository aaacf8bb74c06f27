// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "swift-vmm",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "VMM", targets: ["VMM"]),
        .executable(name: "vmmctl", targets: ["vmmctl"]),
        .executable(name: "vmm-bench", targets: ["VMMBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // Re-exports <linux/kvm.h>, ioctl request numbers and a non-variadic ioctl().
        .target(name: "CKVM"),
        // One Swift type per KVM file descriptor.
        .target(name: "KVM", dependencies: ["CKVM"]),
        // Guest physical memory: memfd-backed segments with guard regions.
        .target(name: "GuestMemory", dependencies: ["CKVM"]),
        // Port-I/O and MMIO buses and the device models.
        .target(name: "Devices", dependencies: ["GuestMemory"]),
        // Image loaders, boot data, initial CPU state.
        .target(name: "Boot", dependencies: ["GuestMemory", "KVM"]),
        // The guest-to-VMM call ABI, the dispatch table and the built-in calls.
        .target(name: "Hypercalls", dependencies: ["GuestMemory"]),
        // Machine: memory + vCPUs + devices + boot.
        .target(name: "VMM", dependencies: [
            "KVM", "GuestMemory", "Devices", "Boot", "Hypercalls",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(
            name: "vmmctl",
            dependencies: [
                "VMM", "KVM", "Boot", "Devices",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The C reference VM (Benchmarks/ref/kvm_ref.c) as a library, so the benchmark can
        // interleave C and Swift batches in one process. Used by nothing else.
        .target(
            name: "KVMRef",
            path: "Benchmarks/ref",
            sources: ["kvm_ref.c"],
            publicHeadersPath: "include",
            cSettings: [.define("KVMREF_LIBRARY")]
        ),
        .executableTarget(
            name: "VMMBench",
            dependencies: ["VMM", "KVM", "Boot", "Devices", "Hypercalls", "GuestMemory", "KVMRef"]
        ),
        .testTarget(
            name: "VMMTests",
            dependencies: ["KVM", "GuestMemory", "Devices", "Boot", "VMM", "Hypercalls"],
            path: "Tests/VMMTests"
        ),
    ],
    swiftLanguageModes: [.v6]
)
