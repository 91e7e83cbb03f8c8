//! Builds the benchmark and test probes (xdp-probes: `floor_pass`, `floor_drop`,
//! `probe_*`) with aya-build (nightly, -Z build-std=core, bpf-linker) into
//! their own object in OUT_DIR, for `aya::include_bytes_aligned!` in
//! `tollgate_tests::probes`; the production object (agent/build.rs) holds only
//! `tollgate`. `AYA_BUILD_SKIP=1` skips it, as in the agent.
fn main() -> anyhow::Result<()> {
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tollgate-probes",
            root_dir: "../xdp-probes",
            ..Default::default()
        }],
        aya_build::Toolchain::Custom("nightly"),
    )
}
