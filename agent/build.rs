//! Builds the XDP program with aya-build (nightly, -Z build-std=core, bpf-linker)
//! and leaves the object in OUT_DIR for `aya::include_bytes_aligned!`.
//! `AYA_BUILD_SKIP=1` skips it (for clippy runs on machines without nightly).
fn main() -> anyhow::Result<()> {
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tollgate-ebpf",
            root_dir: "../xdp-ebpf",
            ..Default::default()
        }],
        aya_build::Toolchain::Custom("nightly"),
    )
}
