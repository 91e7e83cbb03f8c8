//! Bringing the XDP program up without ever leaving an interface unprotected.
//!
//! Layout of the pin directory (bpffs), e.g. `/sys/fs/bpf/tollgate/default`:
//!
//! ```text
//! TG_SETTINGS TG_TIERS ...   the maps (kernel::MAP_NAMES)
//! prog                       the program
//! link_<ifname>              one XDP bpf_link per interface
//! next/                      only during an upgrade: the new program's maps
//! ```
//!
//! A pinned link keeps the program attached while no process runs, so a daemon
//! that dies (even `kill -9`) leaves enforcement in place, and the next one:
//!
//! * **adopts** when the pinned maps have this build's layout and every
//!   interface has a live link: nothing is reloaded or reattached;
//! * **repairs** when the maps are compatible but the program pin or a link is
//!   missing or stale: loads a program over the pinned maps and replaces the
//!   program of the existing links atomically (BPF_LINK_UPDATE), attaching only
//!   where there is no link;
//! * **upgrades** when the pinned layout differs: loads the program with fresh
//!   maps pinned in `next/`, configures them, replaces the program on the
//!   existing links atomically, then swaps the pins;
//! * starts **fresh** when nothing is pinned.

use std::{
    collections::BTreeMap,
    fs, io,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    programs::{
        ProgramInfo, Xdp,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
    sys::statfs,
};
use tracing::{debug, info, warn};

use super::bpf_obj;
use super::kernel::{self, AttachMode, KernelError, MAP_NAMES, MapSizes, Maps};
use crate::proto::{OfflineLink, OfflineStatus};
use tollgate_common::names;

pub const PROG_PIN: &str = "prog";
pub const NEXT_DIR: &str = "next";
const LINK_PREFIX: &str = "link_";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

pub fn link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("{LINK_PREFIX}{iface}"))
}

/// How the daemon came up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartKind {
    Fresh,
    Adopted,
    Repaired,
    Upgraded,
}

impl StartKind {
    pub const fn name(self) -> &'static str {
        match self {
            StartKind::Fresh => "fresh",
            StartKind::Adopted => "adopted",
            StartKind::Repaired => "repaired",
            StartKind::Upgraded => "upgraded",
        }
    }
}

/// The running data path.
pub struct Dataplane {
    pub maps: Maps,
    pub start: StartKind,
    /// Interface -> XDP mode, where known.
    pub modes: BTreeMap<String, AttachMode>,
    /// Reader of the program's aya-log ring buffer, if the object has one.
    pub logger: Option<ProgramLogger>,
}

/// Reader of the program's aya-log records.
pub type ProgramLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// What [`install`] hands back: the maps, the mode of each interface, the logger.
type Installed = (Maps, BTreeMap<String, AttachMode>, Option<ProgramLogger>);

/// What to bring up.
pub struct Plan<'a> {
    pub pin_dir: &'a Path,
    pub interfaces: &'a [String],
    pub mode: AttachMode,
    pub sizes: &'a MapSizes,
    /// Modes recorded by an earlier daemon (for adopted links).
    pub known_modes: &'a BTreeMap<String, AttachMode>,
}

/// Configures freshly created (or adopted) maps before any packet sees them.
pub type Configure<'a> = &'a mut dyn FnMut(&mut Maps) -> Result<()>;

/// What a link pin refers to now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    Missing,
    /// Pinned, but not an XDP link attached to this interface (the interface
    /// was deleted or recreated).
    Stale,
    Live {
        link_id: u32,
        prog_id: u32,
    },
}

/// Brings the program up on every interface of `plan`.
pub fn bring_up(plan: &Plan<'_>, configure: Configure<'_>) -> Result<Dataplane> {
    for iface in plan.interfaces {
        if ifindex(iface) == 0 {
            bail!("interface {iface} does not exist (see `ip link`)");
        }
    }
    fs::create_dir_all(plan.pin_dir)
        .with_context(|| format!("creating the pin directory {}", plan.pin_dir.display()))?;
    check_bpffs(plan.pin_dir)?;
    recover_interrupted_upgrade(plan.pin_dir)?;

    let any_map_pinned = MAP_NAMES.iter().any(|n| plan.pin_dir.join(n).exists());
    let dp = if !any_map_pinned {
        info!(pin_dir = %plan.pin_dir.display(), "no pinned program: loading a fresh one");
        match install(plan, plan.pin_dir, None, configure) {
            Ok((maps, modes, logger)) => Dataplane {
                maps,
                start: StartKind::Fresh,
                modes,
                logger,
            },
            Err(e) => {
                // Leave nothing half-made behind.
                if let Err(cleanup) = remove_pins(plan.pin_dir) {
                    warn!(error = %cleanup, "cleaning up after a failed start");
                }
                return Err(e);
            }
        }
    } else {
        match Maps::from_pins(plan.pin_dir) {
            Ok(mut maps) => {
                warn_size_changes(plan.pin_dir, plan.sizes);
                configure(&mut maps)?;
                let prog_id = ProgramInfo::from_pin(plan.pin_dir.join(PROG_PIN))
                    .ok()
                    .map(|p| p.id());
                let all_live = plan.interfaces.iter().all(|iface| {
                    matches!(link_state(plan.pin_dir, iface),
                        LinkState::Live { prog_id: p, .. } if Some(p) == prog_id)
                });
                if all_live && prog_id.is_some() {
                    info!(pin_dir = %plan.pin_dir.display(), ?prog_id,
                        "adopting the pinned program, maps and links: state and counters kept");
                    let modes = plan
                        .interfaces
                        .iter()
                        .filter_map(|i| plan.known_modes.get(i).map(|m| (i.clone(), *m)))
                        .collect();
                    Dataplane {
                        maps,
                        start: StartKind::Adopted,
                        modes,
                        // The running program's aya-log ring, found by its id.
                        logger: prog_id.and_then(adopt_logger),
                    }
                } else {
                    info!(pin_dir = %plan.pin_dir.display(),
                        "pinned maps are compatible but the program or a link is missing: \
                         loading a program over the pinned maps");
                    let (_, modes, logger) =
                        install(plan, plan.pin_dir, Some(()), &mut |_| Ok(()))?;
                    Dataplane {
                        maps,
                        start: StartKind::Repaired,
                        modes,
                        logger,
                    }
                }
            }
            Err(e) => {
                match &e {
                    KernelError::LayoutMismatch { found, .. } => warn!(
                        found,
                        expected = tollgate_common::LAYOUT_VERSION,
                        "pinned maps have another layout: upgrading (state and counters start afresh)"
                    ),
                    other => warn!(error = %other,
                        "pinned maps cannot be used: replacing them (state and counters start afresh)"),
                }
                let next = plan.pin_dir.join(NEXT_DIR);
                if next.exists() {
                    remove_pins(&next)?;
                }
                let (maps, modes, logger) = install(plan, &next, None, configure)?;
                // Every link runs the new program now; swap the pins.
                for name in MAP_NAMES.iter().copied().chain([PROG_PIN]) {
                    remove_if_exists(&plan.pin_dir.join(name))?;
                }
                for name in MAP_NAMES.iter().copied().chain([PROG_PIN]) {
                    fs::rename(next.join(name), plan.pin_dir.join(name))
                        .with_context(|| format!("moving the new pin {name} into place"))?;
                }
                fs::remove_dir(&next).with_context(|| format!("removing {}", next.display()))?;
                Dataplane {
                    maps,
                    start: StartKind::Upgraded,
                    modes,
                    logger,
                }
            }
        }
    };

    // Links of interfaces no longer configured.
    for (iface, path) in pinned_links(plan.pin_dir)? {
        if !plan.interfaces.contains(&iface) {
            warn!(%iface, "interface is no longer configured: detaching from it");
            remove_if_exists(&path)?;
        }
    }
    let mut dp = dp;
    for (iface, mode) in plan.known_modes {
        if plan.interfaces.contains(iface) {
            dp.modes.entry(iface.clone()).or_insert(*mode);
        }
    }
    Ok(dp)
}

/// The `[maps]` sizes the pinned maps have, configured differently: a map
/// keeps its size (and its state) while it is adopted, so say so, with both
/// sizes and what applies the new one.
fn warn_size_changes(pin_dir: &Path, sizes: &MapSizes) {
    for (key, name, configured) in [
        ("sources_v4", names::SOURCES_V4, sizes.sources_v4),
        ("sources_v6", names::SOURCES_V6, sizes.sources_v6),
        ("rules_v4", names::RULES_V4, sizes.rules_v4),
        ("rules_v6", names::RULES_V6, sizes.rules_v6),
        ("sample_ring_bytes", names::SAMPLES, sizes.sample_ring_bytes),
    ] {
        let Ok(info) = aya::maps::MapInfo::from_pin(pin_dir.join(name)) else {
            continue;
        };
        let pinned = info.max_entries();
        if pinned != configured {
            warn!(
                map = key,
                pinned,
                configured,
                "[maps] {key} = {configured} cannot take effect: the pinned map in use keeps its size \
                 ({pinned}) and its state. To apply it, run `tollgate detach` and start the daemon \
                 again (bucket state and counters start afresh)"
            );
        }
    }
}

/// Loads the program with its maps pinned in `maps_dir` (reused where pinned
/// already), points every interface's link at it (replacing the program of
/// live links atomically, attaching where there is none) and pins it as
/// `maps_dir/prog`. With `reuse` set the maps are already open and configured
/// (repair); otherwise they are new and are stamped and configured here, before
/// any link uses them.
fn install(
    plan: &Plan<'_>,
    maps_dir: &Path,
    reuse: Option<()>,
    configure: Configure<'_>,
) -> Result<Installed> {
    let mut ebpf = kernel::load(super::EBPF_OBJECT, plan.sizes, Some(maps_dir))?;
    let logger = init_logger(&mut ebpf);
    let mut maps = Maps::from_ebpf(&mut ebpf)?;
    if reuse.is_none() {
        maps.stamp_layout()?;
        configure(&mut maps)?;
    }
    let program = kernel::program_mut(&mut ebpf)?;
    let mut modes = BTreeMap::new();
    for iface in plan.interfaces {
        let pin = link_pin(plan.pin_dir, iface);
        match link_state(plan.pin_dir, iface) {
            LinkState::Live { link_id, .. } => {
                let pinned = PinnedLink::from_pin(&pin)
                    .with_context(|| format!("opening the pinned link {}", pin.display()))?;
                let link = XdpLink::try_from(FdLink::from(pinned))
                    .with_context(|| format!("{} is not an XDP link", pin.display()))?;
                program.attach_to_link(link).with_context(|| {
                    format!("replacing the program on {iface}'s link (BPF_LINK_UPDATE)")
                })?;
                info!(%iface, link_id, "replaced the program on the pinned link atomically");
                if let Some(m) = plan.known_modes.get(iface) {
                    modes.insert(iface.clone(), *m);
                }
            }
            state => {
                if state == LinkState::Stale {
                    warn!(%iface, "pinned link is not attached to the interface (was it recreated?): re-attaching");
                    remove_if_exists(&pin)?;
                }
                let used = attach_and_pin(program, iface, plan.mode, &pin)?;
                info!(%iface, mode = ?used, "attached");
                modes.insert(iface.clone(), used);
            }
        }
    }
    let prog_pin = maps_dir.join(PROG_PIN);
    remove_if_exists(&prog_pin)?;
    program
        .pin(&prog_pin)
        .with_context(|| format!("pinning the program at {}", prog_pin.display()))?;
    // Dropping the object closes our program and link fds; the pins keep them.
    drop(ebpf);
    Ok((maps, modes, logger))
}

/// Attaches `program` to `iface` with a new XDP link and pins the link at
/// `pin` (which must not exist); returns the mode used.
pub(super) fn attach_and_pin(
    program: &mut Xdp,
    iface: &str,
    mode: AttachMode,
    pin: &Path,
) -> Result<AttachMode> {
    let (id, used) =
        kernel::attach(program, iface, mode).with_context(|| format!("attaching to {iface}"))?;
    let link = program.take_link(id)?;
    let fd = FdLink::try_from(link).map_err(|_| {
        anyhow!(
            "attaching to {iface}: the kernel attached through netlink, without a \
             bpf_link; tollgate needs XDP links (Linux 5.9 or later) to survive restarts"
        )
    })?;
    fd.pin(pin)
        .with_context(|| format!("pinning the link at {}", pin.display()))?;
    Ok(used)
}

fn init_logger(ebpf: &mut Ebpf) -> Option<ProgramLogger> {
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => Some(logger),
        Err(e) => {
            debug!(error = %e, "the XDP program does not log (no aya-log map); continuing");
            None
        }
    }
}

fn adopt_logger(program_id: u32) -> Option<ProgramLogger> {
    match aya_log::EbpfLogger::init_from_id(program_id) {
        Ok(logger) => Some(logger),
        Err(e) => {
            warn!(program_id, error = %e, "cannot read the adopted program's log records; its internal errors will not be logged");
            None
        }
    }
}

/// Finishes or discards an upgrade a crash interrupted.
fn recover_interrupted_upgrade(pin_dir: &Path) -> Result<()> {
    let next = pin_dir.join(NEXT_DIR);
    if !next.is_dir() {
        return Ok(());
    }
    let old_gone = MAP_NAMES.iter().all(|n| !pin_dir.join(n).exists());
    let new_complete = MAP_NAMES.iter().all(|n| next.join(n).exists());
    if old_gone && new_complete {
        warn!("finishing an interrupted upgrade: moving the new pins into place");
        for name in MAP_NAMES.iter().copied().chain([PROG_PIN]) {
            if next.join(name).exists() {
                fs::rename(next.join(name), pin_dir.join(name))?;
            }
        }
        fs::remove_dir(&next)?;
    } else {
        warn!("discarding the leftovers of an interrupted upgrade");
        remove_pins(&next)?;
    }
    Ok(())
}

/// `(interface, pin path)` of every link pinned in `pin_dir`.
pub fn pinned_links(pin_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(pin_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", pin_dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(iface) = name.strip_prefix(LINK_PREFIX) {
            out.push((iface.to_owned(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Removes every tollgate pin in `pin_dir` (links first, so the interfaces are
/// released before the program), then the directory. Refuses directories that
/// are not on bpffs and leaves unknown entries alone. Returns how many pins
/// were removed.
pub fn remove_pins(pin_dir: &Path) -> Result<usize> {
    if !pin_dir.exists() {
        return Ok(0);
    }
    check_bpffs(pin_dir)?;
    let mut removed = 0;
    for (iface, path) in pinned_links(pin_dir)? {
        // Detach synchronously: dropping the last reference (the pin) frees
        // the link asynchronously, and the interface would keep the program
        // for a moment after `tollgate detach` returned.
        if let Err(e) = bpf_obj::get(&path).and_then(|fd| bpf_obj::link_detach(&fd)) {
            debug!(%iface, error = %e, "BPF_LINK_DETACH failed; removing the pin releases the link");
        }
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        removed += 1;
    }
    let next = pin_dir.join(NEXT_DIR);
    if next.is_dir() {
        removed += remove_pins(&next)?;
    }
    for name in [PROG_PIN].into_iter().chain(MAP_NAMES) {
        if remove_if_exists(&pin_dir.join(name))? {
            removed += 1;
        }
    }
    match fs::remove_dir(pin_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
            bail!(
                "{} holds entries tollgate did not create; they were left in place",
                pin_dir.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("removing {}", pin_dir.display())),
    }
    Ok(removed)
}

pub(super) fn remove_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Fails unless `path` is on a BPF filesystem (pins can only live there, and
/// this keeps `detach` from deleting anything elsewhere).
pub fn check_bpffs(path: &Path) -> Result<()> {
    let st = statfs::statfs(path).with_context(|| format!("statfs {}", path.display()))?;
    if st.filesystem_type().0 as i64 != BPF_FS_MAGIC {
        bail!(
            "{} is not on a BPF filesystem (mount one with `mount -t bpf bpf /sys/fs/bpf`)",
            path.display()
        );
    }
    Ok(())
}

pub fn ifindex(iface: &str) -> u32 {
    nix::net::if_::if_nametoindex(iface).unwrap_or(0)
}

/// Whether `iface`'s pinned link exists and is attached to it.
pub fn link_state(pin_dir: &Path, iface: &str) -> LinkState {
    let pin = link_pin(pin_dir, iface);
    if !pin.exists() {
        return LinkState::Missing;
    }
    match bpf_obj::get(&pin) {
        Ok(fd) => link_fd_state(&fd, iface),
        Err(e) => {
            debug!(pin = %pin.display(), error = %e, "opening the pinned link");
            LinkState::Stale
        }
    }
}

/// Whether the link behind `fd` is an XDP link attached to `iface` (an
/// interface that was deleted leaves its link defunct, with ifindex 0).
pub fn link_fd_state(fd: &OwnedFd, iface: &str) -> LinkState {
    match bpf_obj::link_info(fd) {
        Ok(info)
            if info.link_type == bpf_obj::LINK_TYPE_XDP
                && info.ifindex != 0
                && info.ifindex == ifindex(iface) =>
        {
            LinkState::Live {
                link_id: info.id,
                prog_id: info.prog_id,
            }
        }
        Ok(_) => LinkState::Stale,
        Err(e) => {
            debug!(%iface, error = %e, "reading a link's info");
            LinkState::Stale
        }
    }
}

/// Program id of the pinned program, if any.
pub fn pinned_program_id(pin_dir: &Path) -> Option<u32> {
    ProgramInfo::from_pin(pin_dir.join(PROG_PIN))
        .ok()
        .map(|p| p.id())
}

/// The pin directory's flock, held for the daemon's life (dropping it
/// unlocks). `Unlocked` when the filesystem refused the lock for a reason
/// other than another holder: the daemon goes on, as it did before locks.
pub enum PinDirLock {
    Locked(Flock<fs::File>),
    Unlocked(fs::File),
}

/// Takes an exclusive lock on the pin directory so two daemons never drive
/// the same pins.
pub fn lock_pin_dir(pin_dir: &Path) -> Result<PinDirLock> {
    std::fs::create_dir_all(pin_dir)
        .with_context(|| format!("creating the pin directory {}", pin_dir.display()))?;
    let dir = fs::File::open(pin_dir).with_context(|| format!("opening {}", pin_dir.display()))?;
    match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(PinDirLock::Locked(lock)),
        Err((_, Errno::EWOULDBLOCK)) => bail!(
            "another tollgate daemon is using {} (stop it first, or give this one another --pin-dir)",
            pin_dir.display()
        ),
        Err((dir, e)) => {
            warn!(error = %e, "could not lock the pin directory; continuing");
            Ok(PinDirLock::Unlocked(dir))
        }
    }
}

/// `tollgate detach` when no daemon answers: removes the links, the program
/// and every pin in `pin_dir`. Refuses while a daemon holds the directory.
pub fn detach_offline(pin_dir: &Path) -> Result<String> {
    if !pin_dir.exists() {
        return Ok(format!(
            "nothing to detach: {} does not exist",
            pin_dir.display()
        ));
    }
    let dir = fs::File::open(pin_dir).with_context(|| format!("opening {}", pin_dir.display()))?;
    // Held (or not, if the filesystem refuses locks) until the pins are gone.
    let _lock = match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
        Err((_, Errno::EWOULDBLOCK)) => bail!(
            "a tollgate daemon is using {} but is not answering on this socket: pass its --socket (or stop it) and retry",
            pin_dir.display()
        ),
        Ok(lock) => PinDirLock::Locked(lock),
        Err((dir, _)) => PinDirLock::Unlocked(dir),
    };
    let links: Vec<String> = pinned_links(pin_dir)?.into_iter().map(|(i, _)| i).collect();
    let n = remove_pins(pin_dir)?;
    Ok(format!(
        "detached from {} (no daemon was running); removed {n} pins and {}",
        if links.is_empty() {
            "no interfaces".to_owned()
        } else {
            links.join(", ")
        },
        pin_dir.display()
    ))
}

/// `status` without a daemon: the pinned program and links in `pin_dir`, and
/// whether each link still enforces on its interface. Reads only.
pub fn offline_status(pin_dir: &Path) -> Result<OfflineStatus> {
    let program = ProgramInfo::from_pin(pin_dir.join(PROG_PIN)).ok();
    let mut links = Vec::new();
    for (iface, _) in pinned_links(pin_dir)? {
        let (attached, link_id, program_id) = match link_state(pin_dir, &iface) {
            LinkState::Live { link_id, prog_id } => (true, Some(link_id), Some(prog_id)),
            _ => (false, None, None),
        };
        links.push(OfflineLink {
            interface: iface,
            attached,
            link_id,
            program_id,
        });
    }
    links.sort_by(|a, b| a.interface.cmp(&b.interface));
    Ok(OfflineStatus {
        daemon_running: false,
        pin_dir: pin_dir.to_owned(),
        program_id: program.as_ref().map(|p| p.id()),
        program_loaded_unix: program
            .and_then(|p| p.loaded_at())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        links,
    })
}
