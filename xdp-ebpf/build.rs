use which::which;

fn main() {
    // Rebuild when bpf-linker changes.
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    // bpf-linker does the code generation: let it emit unaligned loads and
    // stores (one 8-byte packet load instead of eight byte loads and the
    // shifts to join them). The JITs of 64-bit hosts with efficient
    // unaligned access, where the verifier does not require aligned packet
    // and map value access, run them as they are.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        println!("cargo:rustc-link-arg-bins=--cpu-features=+allows-misaligned-mem-access");
    }
}
