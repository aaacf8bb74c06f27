import CKVM

/// The time this process spends inside KVM's ioctls, split into `KVM_RUN` (the guest
/// running, and KVM's own work on entry) and every other one (creating the VM and its
/// vCPUs, memory slots, loading state): the kernel's part of building and starting a
/// machine, which a benchmark subtracts to find the VMM's own. Off by default; while
/// off, each ioctl pays one relaxed load.
public enum IoctlClock {
    /// Zeroes both totals and starts counting (for the whole process, every thread).
    public static func start() { ckvm_ioctl_clock_start() }

    /// Stops counting; the totals stay readable.
    public static func stop() { ckvm_ioctl_clock_stop() }

    /// Nanoseconds spent in ioctls other than `KVM_RUN`, and in `KVM_RUN`, since `start()`.
    public static var spent: (kvm: UInt64, run: UInt64) {
        (UInt64(ckvm_ioctl_clock_read(0)), UInt64(ckvm_ioctl_clock_read(1)))
    }
}
