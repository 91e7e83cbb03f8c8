//! The benchmark and test probes: two reference programs (`floor_pass`, a bare
//! XDP_PASS, and `floor_drop`, a bare XDP_DROP) and single-operation probes
//! (`probe_clock`, `probe_coarse_clock`, `probe_jiffies`, `probe_source_lookup`,
//! `probe_call`, `probe_loop_1`, `probe_loop_8`). They live in their
//! own eBPF object, built from `xdp-probes/` by this crate's build script, so
//! the object the agent ships holds only the `tollgate` program and its maps.

use anyhow::{Context, Result};
use aya::{Ebpf, EbpfLoader, maps::HashMap, programs::Xdp};
use tollgate_common::SourceState;

pub use tollgate_probes::{
    FLOOR_DROP, FLOOR_PASS, PROBE_CALL, PROBE_CLOCK, PROBE_COARSE_CLOCK, PROBE_JIFFIES,
    PROBE_LOOP_1, PROBE_LOOP_8, PROBE_SOURCE, PROBE_SOURCE_LOOKUP, PROBE_SOURCES_V4, PROGRAMS,
};

/// The compiled probes object, embedded at build time by build.rs.
pub static PROBES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tollgate-probes"));

/// The probes object in the kernel: its maps created, the programs asked for
/// loaded (the others stay unloaded).
pub struct Probes {
    pub ebpf: Ebpf,
}

impl Probes {
    /// Loads `programs` with the default size of `PROBE_SOURCES_V4`.
    pub fn load(programs: &[&str]) -> Result<Probes> {
        Self::load_sized(programs, None)
    }

    /// Loads `programs`, with `PROBE_SOURCES_V4` sized `sources` entries if
    /// given (the size of the production map it stands for).
    pub fn load_sized(programs: &[&str], sources: Option<u32>) -> Result<Probes> {
        let mut loader = EbpfLoader::new();
        if let Some(sources) = sources {
            loader.map_max_entries(PROBE_SOURCES_V4, sources);
        }
        let mut ebpf = loader
            .load(PROBES_OBJECT)
            .context("loading the probes object")?;
        for &name in programs {
            let xdp: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("probe program {name}"))?
                .try_into()?;
            xdp.load().with_context(|| format!("loading {name}"))?;
        }
        Ok(Probes { ebpf })
    }

    /// A probe program (loaded if it was asked for).
    pub fn xdp(&self, name: &str) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(name)
            .with_context(|| format!("probe program {name}"))?
            .try_into()?)
    }

    pub fn xdp_mut(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("probe program {name}"))?
            .try_into()?)
    }

    /// Puts `PROBE_SOURCE` into `PROBE_SOURCES_V4`, so `probe_source_lookup`
    /// finds its key (XDP_PASS) as tollgate finds a known source.
    pub fn track_probe_source(&mut self) -> Result<()> {
        let mut sources: HashMap<_, u32, SourceState> = self
            .ebpf
            .map_mut(PROBE_SOURCES_V4)
            .context(PROBE_SOURCES_V4)?
            .try_into()?;
        sources.insert(PROBE_SOURCE, SourceState::default(), 0)?;
        Ok(())
    }
}
