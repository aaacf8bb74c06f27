/// The target description gdb reads with `qXfer:features:read:target.xml` (GDB manual,
/// appendix G "Target Descriptions", G.5 "Standard Target Features" for i386): the
/// architecture, and every register of `RegisterFile.layout` with its type, grouped in
/// the standard i386 features gdb knows plus one of this VMM's for the system registers.
public enum TargetDescription {
    /// The whole document, one feature per group of `RegisterFile.layout`.
    public static let xml: String = {
        var out = """
        <?xml version="1.0"?>
        <!DOCTYPE target SYSTEM "gdb-target.dtd">
        <target version="1.0">
          <architecture>i386:x86-64</architecture>

        """
        var feature: String?
        for (number, def) in RegisterFile.layout.enumerated() {
            if def.feature != feature {
                if feature != nil { out += "  </feature>\n" }
                feature = def.feature
                out += "  <feature name=\"\(def.feature)\">\n" + (types[def.feature] ?? "")
            }
            out += "    <reg name=\"\(def.name)\" bitsize=\"\(def.bits)\" type=\"\(def.type)\" regnum=\"\(number)\""
                + (def.group.map { " group=\"\($0)\"" } ?? "") + "/>\n"
        }
        out += "  </feature>\n</target>\n"
        return out
    }()

    /// The bytes gdb reads, as `qXfer` serves them.
    public static let bytes = Array(xml.utf8)

    private static func flags(_ id: String, size: Int, _ fields: [(String, Int)]) -> String {
        "    <flags id=\"\(id)\" size=\"\(size)\">\n"
            + fields.map { "      <field name=\"\($0.0)\" start=\"\($0.1)\" end=\"\($0.1)\"/>\n" }.joined()
            + "    </flags>\n"
    }

    /// The SSE register type: gdb's `vec128` union of the ways to read an XMM register.
    private static let vectorTypes = """
            <vector id="v4f" type="ieee_single" count="4"/>
            <vector id="v2d" type="ieee_double" count="2"/>
            <vector id="v16i8" type="int8" count="16"/>
            <vector id="v8i16" type="int16" count="8"/>
            <vector id="v4i32" type="int32" count="4"/>
            <vector id="v2i64" type="int64" count="2"/>
            <union id="vec128">
              <field name="v4_float" type="v4f"/>
              <field name="v2_double" type="v2d"/>
              <field name="v16_int8" type="v16i8"/>
              <field name="v8_int16" type="v8i16"/>
              <field name="v4_int32" type="v4i32"/>
              <field name="v2_int64" type="v2i64"/>
              <field name="uint128" type="uint128"/>
            </union>

        """

    /// The types each feature defines before its registers.
    private static let types: [String: String] = [
        RegisterFile.core: flags("i386_eflags", size: 4, [
            ("CF", 0), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("TF", 8), ("IF", 9), ("DF", 10),
            ("OF", 11), ("NT", 14), ("RF", 16), ("VM", 17), ("AC", 18), ("VIF", 19), ("VIP", 20), ("ID", 21),
        ]),
        RegisterFile.sse: vectorTypes + flags("i386_mxcsr", size: 4, [
            ("IE", 0), ("DE", 1), ("ZE", 2), ("OE", 3), ("UE", 4), ("PE", 5), ("DAZ", 6), ("IM", 7), ("DM", 8),
            ("ZM", 9), ("OM", 10), ("UM", 11), ("PM", 12), ("FZ", 15),
        ]),
        RegisterFile.system: flags("x86_cr0", size: 8, [
            ("PE", 0), ("MP", 1), ("EM", 2), ("TS", 3), ("ET", 4), ("NE", 5), ("WP", 16), ("AM", 18), ("NW", 29),
            ("CD", 30), ("PG", 31),
        ]) + flags("x86_cr4", size: 8, [
            ("VME", 0), ("PVI", 1), ("TSD", 2), ("DE", 3), ("PSE", 4), ("PAE", 5), ("MCE", 6), ("PGE", 7), ("PCE", 8),
            ("OSFXSR", 9), ("OSXMMEXCPT", 10), ("UMIP", 11), ("LA57", 12), ("VMXE", 13), ("SMXE", 14),
            ("FSGSBASE", 16), ("PCIDE", 17), ("OSXSAVE", 18), ("SMEP", 20), ("SMAP", 21), ("PKE", 22),
        ]) + flags("x86_efer", size: 8, [("SCE", 0), ("LME", 8), ("LMA", 10), ("NXE", 11), ("SVME", 12), ("FFXSR", 14)]),
    ]
}
