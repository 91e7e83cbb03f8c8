//! Keeps the data path whole while the daemon runs.
//!
//! The pins are what keep enforcement alive across daemon restarts, so they
//! must survive an operator's (or a cleanup script's) `rm` under a running
//! daemon. The guard holds an fd on every pinned object (maps, program, one
//! XDP link per interface), which keeps them alive whatever happens to the
//! pins, and every [`CHECK_INTERVAL`]:
//!
//! * re-pins any object whose pin was removed (the pin directory too), so a
//!   restart still finds and adopts them;
//! * notices an interface that was deleted (its link goes defunct: enforcement
//!   on it has stopped because the interface is gone) and re-attaches the
//!   program when an interface of that name exists again.

use std::{
    collections::BTreeMap,
    fs, io,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use tracing::{error, info, warn};

use super::kernel::{AttachMode, MAP_NAMES};
use super::{
    bpf_obj,
    dataplane::{self, LinkState, PROG_PIN},
};

/// How often the pins and interfaces are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What one check repaired.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Pins re-created.
    pub repinned: u64,
    /// Interfaces the program was attached to again, with the mode used.
    pub reattached: Vec<(String, AttachMode)>,
}

struct Held {
    pin: PathBuf,
    fd: OwnedFd,
}

struct InterfaceLink {
    /// The link, while it exists (defunct once the interface is deleted).
    link: Option<Held>,
    /// The link's state at the last check (what status and metrics show,
    /// and how a detach is logged once).
    state: LinkState,
    /// The last re-attach failure, so it is logged once, not every second.
    failing: Option<String>,
}

pub struct Guard {
    pin_dir: PathBuf,
    /// The flock that keeps a second daemon off this pin directory; taken
    /// again if the directory is re-created.
    lock: dataplane::PinDirLock,
    /// Maps and program.
    objects: Vec<Held>,
    links: BTreeMap<String, InterfaceLink>,
    /// The configured mode, used to re-attach (`auto` falls back to generic
    /// where the new interface has no native XDP).
    mode: AttachMode,
    /// The last re-pin failure, so it is logged once.
    pins_failing: Option<String>,
    totals: RepairTotals,
}

/// Repairs since the daemon started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairTotals {
    /// Pins re-created.
    pub repinned: u64,
    /// Interfaces the program was attached to again.
    pub reattached: u64,
}

impl Guard {
    /// Takes hold of everything pinned in `pin_dir` for `interfaces`
    /// (called once the data path is up); `mode` is the configured XDP mode.
    pub fn new(
        pin_dir: &Path,
        lock: dataplane::PinDirLock,
        interfaces: &[String],
        mode: AttachMode,
    ) -> Result<Guard> {
        let open = |pin: PathBuf| -> Result<Held> {
            let fd = bpf_obj::get(&pin).with_context(|| format!("opening {}", pin.display()))?;
            Ok(Held { pin, fd })
        };
        let objects = MAP_NAMES
            .iter()
            .chain([&PROG_PIN])
            .map(|name| open(pin_dir.join(name)))
            .collect::<Result<Vec<_>>>()?;
        let links = interfaces
            .iter()
            .map(|iface| {
                let link = open(dataplane::link_pin(pin_dir, iface))?;
                Ok((
                    iface.clone(),
                    InterfaceLink {
                        state: dataplane::link_fd_state(&link.fd, iface),
                        link: Some(link),
                        failing: None,
                    },
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Guard {
            pin_dir: pin_dir.to_owned(),
            lock,
            objects,
            links,
            mode,
            pins_failing: None,
            totals: RepairTotals::default(),
        })
    }

    /// `iface`'s link as of the last check, read from the held fd (so right
    /// also while its pin is gone).
    pub fn link_state(&self, iface: &str) -> LinkState {
        self.links
            .get(iface)
            .map_or(LinkState::Missing, |l| l.state)
    }

    /// Repairs since the daemon started.
    pub fn totals(&self) -> RepairTotals {
        self.totals
    }

    /// Repairs what was removed since the last check; see the module docs.
    pub fn check(&mut self) -> Repairs {
        let mut repairs = Repairs::default();
        match self.repin_all() {
            Ok(n) => {
                repairs.repinned = n;
                if self.pins_failing.take().is_some() {
                    info!(pin_dir = %self.pin_dir.display(), "the pins are back in place");
                }
            }
            Err(e) => {
                let e = format!("{e:#}");
                if self.pins_failing.as_ref() != Some(&e) {
                    error!(pin_dir = %self.pin_dir.display(), error = %e,
                        "cannot re-create removed pins: enforcement goes on while this daemon \
                         runs, but a restart would start afresh");
                }
                self.pins_failing = Some(e);
            }
        }
        let ifaces: Vec<String> = self.links.keys().cloned().collect();
        for iface in ifaces {
            if let Some(mode) = self.check_interface(&iface) {
                repairs.reattached.push((iface, mode));
            }
        }
        self.totals.repinned += repairs.repinned;
        self.totals.reattached += repairs.reattached.len() as u64;
        repairs
    }

    /// Re-pins every held object whose pin is gone; returns how many.
    fn repin_all(&mut self) -> Result<u64> {
        if !self.pin_dir.is_dir() {
            warn!(pin_dir = %self.pin_dir.display(),
                "the pin directory was removed under the running daemon: re-creating it");
            fs::create_dir_all(&self.pin_dir)
                .with_context(|| format!("creating {}", self.pin_dir.display()))?;
            dataplane::check_bpffs(&self.pin_dir)?;
            self.lock = dataplane::lock_pin_dir(&self.pin_dir)?;
        }
        let links = self.links.values().filter_map(|l| l.link.as_ref());
        let mut repinned = Vec::new();
        for held in self.objects.iter().chain(links) {
            if repin(held)? {
                repinned.push(held.pin.display().to_string());
            }
        }
        // One line per check, however many pins came back.
        match repinned.as_slice() {
            [] => {}
            [one] => warn!(pin = %one, "a pin was removed under the running daemon: re-pinned it"),
            many => warn!(pins = %many.join(","), count = many.len(),
                "{} pins were removed under the running daemon: re-pinned it all in one check",
                many.len()),
        }
        Ok(repinned.len() as u64)
    }

    /// Checks one interface's link; re-attaches when the interface came back.
    /// Returns the mode when it re-attached.
    fn check_interface(&mut self, iface: &str) -> Option<AttachMode> {
        let (pin_dir, mode) = (self.pin_dir.clone(), self.mode);
        let link = self.links.get_mut(iface)?;
        let now = link.link.as_ref().map_or(LinkState::Missing, |held| {
            dataplane::link_fd_state(&held.fd, iface)
        });
        let was = std::mem::replace(&mut link.state, now);
        if matches!(now, LinkState::Live { .. }) {
            return None;
        }
        if matches!(was, LinkState::Live { .. }) {
            warn!(%iface, "the interface was deleted (or replaced): the program is no longer \
                attached to it; re-attaching as soon as an interface of that name exists");
        }
        let ifindex = dataplane::ifindex(iface);
        if ifindex == 0 {
            return None;
        }
        // The interface exists again: a new link replaces the defunct one.
        link.link = None;
        match reattach(&pin_dir, iface, mode) {
            Ok((held, used)) => {
                info!(%iface, ifindex, mode = ?used, "the interface is back: re-attached the program");
                link.state = dataplane::link_fd_state(&held.fd, iface);
                link.link = Some(held);
                link.failing = None;
                Some(used)
            }
            Err(e) => {
                let e = format!("{e:#}");
                if link.failing.as_ref() != Some(&e) {
                    error!(%iface, error = %e, "re-attaching to the interface failed; retrying every second");
                }
                link.failing = Some(e);
                None
            }
        }
    }
}

/// Pins `held` again if its pin is gone. Returns whether it did.
fn repin(held: &Held) -> Result<bool> {
    match fs::symlink_metadata(&held.pin) {
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", held.pin.display())),
    }
    bpf_obj::pin(&held.fd, &held.pin)
        .with_context(|| format!("re-pinning {}", held.pin.display()))?;
    Ok(true)
}

/// Attaches the pinned program to `iface` with a new link, pinned in place of
/// the defunct one.
fn reattach(pin_dir: &Path, iface: &str, mode: AttachMode) -> Result<(Held, AttachMode)> {
    let mut program = Xdp::from_pin(pin_dir.join(PROG_PIN), XdpAttachType::Interface)
        .context("opening the pinned program")?;
    let pin = dataplane::link_pin(pin_dir, iface);
    dataplane::remove_if_exists(&pin)?;
    let used = dataplane::attach_and_pin(&mut program, iface, mode, &pin)?;
    let fd = bpf_obj::get(&pin).with_context(|| format!("opening {}", pin.display()))?;
    Ok((Held { pin, fd }, used))
}
