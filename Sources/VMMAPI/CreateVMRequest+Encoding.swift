extension CreateVMRequest {
    /// Encodes what the request says (state records, clients). A restore request keeps
    /// only its own fields: the machine's shape is the snapshot's, filled in by the
    /// daemon when it opens the snapshot, and must not come back as given fields.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(lifetime, forKey: .lifetime)
        try c.encode(start, forKey: .start)
        try c.encode(flags, forKey: .flags)
        try c.encode(reserved, forKey: .reserved)
        try c.encode(net, forKey: .net)
        try c.encodeIfPresent(vsock, forKey: .vsock)
        if let restoreFrom {
            try c.encode(restoreFrom, forKey: .restoreFrom)
            return
        }
        try c.encode(memoryMiB, forKey: .memoryMiB)
        try c.encode(vcpus, forKey: .vcpus)
        try c.encode(kernel, forKey: .kernel)
        try c.encodeIfPresent(initrd, forKey: .initrd)
        try c.encode(cmdline, forKey: .cmdline)
        try c.encode(debugExit, forKey: .debugExit)
        try c.encode(hypercalls, forKey: .hypercalls)
        try c.encode(noReboot, forKey: .noReboot)
        try c.encode(tripleFault, forKey: .tripleFault)
        try c.encode(cpuTemplate, forKey: .cpuTemplate)
        try c.encode(disks, forKey: .disks)
        try c.encode(rng, forKey: .rng)
        try c.encode(trackDirtyPages, forKey: .trackDirtyPages)
    }
}
