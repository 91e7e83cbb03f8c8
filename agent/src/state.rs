//! What the daemon must remember across restarts, in one JSON file written
//! atomically (temp file, fsync, rename, fsync of the directory):
//!
//! * the changes made with the CLI (`tier set/rm`, `rule add/rm`), kept as an
//!   overlay on the config file: effective config = file + overlay;
//! * the tier name -> index assignment (bucket state and counters are per
//!   index, so a tier keeps its index across reloads and restarts);
//! * the route name -> index assignment (a route's ceiling and counters are
//!   per index, so a route keeps its index too);
//! * the XDP mode each interface was attached in (the kernel does not report it
//!   for a pinned link).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tollgate_common::{MAX_TIERS, route::MAX_ROUTES};

use crate::{
    config::{Config, ConfigError, Invalid, Section},
    datapath::kernel::AttachMode,
    spec::{BanBook, RouteSpec, RuleSpec, RuleTarget, TierSpec, parse_cidr, quoted},
};

pub const STATE_VERSION: u32 = 1;

/// The persisted state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub version: u32,
    /// Tier name -> index into the kernel's tier array.
    pub tier_indices: BTreeMap<String, u32>,
    /// Route name -> index into the kernel's route ceilings and counters.
    pub route_indices: BTreeMap<String, u32>,
    /// Changes made with the CLI.
    pub overlay: Overlay,
    /// Interface -> XDP mode it was attached in.
    pub attachments: BTreeMap<String, AttachMode>,
    /// Bans in force (wall-clock expiry) and the offence history that
    /// escalates them.
    pub bans: BanBook,
}

/// Changes made with the CLI, applied on top of the config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Overlay {
    /// Tiers created or replaced with `tier set` (whole specs).
    pub tiers: BTreeMap<String, TierSpec>,
    /// File tiers removed with `tier rm`.
    pub removed_tiers: BTreeSet<String>,
    /// Rules added with `rule add`, by canonical CIDR.
    pub rules: BTreeMap<String, RuleTarget>,
    /// File rules removed with `rule rm`, by canonical CIDR.
    pub removed_rules: BTreeSet<String>,
    /// Routes added or replaced with `route add` (whole specs).
    pub routes: BTreeMap<String, RouteSpec>,
    /// File routes removed with `route rm`.
    pub removed_routes: BTreeSet<String>,
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
            && self.removed_tiers.is_empty()
            && self.rules.is_empty()
            && self.removed_rules.is_empty()
            && self.routes.is_empty()
            && self.removed_routes.is_empty()
    }

    /// How many changes the overlay holds (`status`).
    pub fn len(&self) -> usize {
        self.tiers.len()
            + self.removed_tiers.len()
            + self.rules.len()
            + self.removed_rules.len()
            + self.routes.len()
            + self.removed_routes.len()
    }

    /// The effective configuration: `file` with these changes, validated
    /// (by the same `config::validate` as the file and each CLI change).
    pub fn apply(&self, file: &Config) -> Result<Config, ConfigError> {
        let mut c = file.clone();
        c.tiers.retain(|t| !self.removed_tiers.contains(&t.name));
        for spec in self.tiers.values() {
            match c.tiers.iter_mut().find(|t| t.name == spec.name) {
                Some(t) => *t = spec.clone(),
                None => c.tiers.push(spec.clone()),
            }
        }
        c.rules
            .retain(|r| !self.removed_rules.contains(&r.cidr.to_string()));
        for (cidr, target) in &self.rules {
            let cidr = parse_cidr(cidr).map_err(|e| {
                ConfigError::WithChanges(Box::new(Invalid::new(
                    Section::Rule {
                        index: c.rules.len(),
                        cidr: None,
                    },
                    Some("cidr"),
                    Some(quoted(cidr)),
                    e,
                )))
            })?;
            let spec = RuleSpec {
                cidr,
                target: target.clone(),
            };
            match c.rules.iter_mut().find(|r| r.cidr == cidr) {
                Some(r) => *r = spec,
                None => c.rules.push(spec),
            }
        }
        c.routes.retain(|r| !self.removed_routes.contains(&r.name));
        for spec in self.routes.values() {
            match c.routes.iter_mut().find(|r| r.name == spec.name) {
                Some(r) => *r = spec.clone(),
                None => c.routes.push(spec.clone()),
            }
        }
        c.validate()
            .map_err(|e| ConfigError::WithChanges(Box::new(e)))?;
        Ok(c)
    }

    /// Records `route add`.
    pub fn add_route(&mut self, spec: RouteSpec) {
        self.removed_routes.remove(&spec.name);
        self.routes.insert(spec.name.clone(), spec);
    }

    /// Records `route rm` (`in_file`: the config file defines it).
    pub fn remove_route(&mut self, name: &str, in_file: bool) {
        self.routes.remove(name);
        if in_file {
            self.removed_routes.insert(name.to_owned());
        }
    }

    /// Records `tier set`.
    pub fn set_tier(&mut self, spec: TierSpec) {
        self.removed_tiers.remove(&spec.name);
        self.tiers.insert(spec.name.clone(), spec);
    }

    /// Records `tier rm` (`in_file`: the config file defines it).
    pub fn remove_tier(&mut self, name: &str, in_file: bool) {
        self.tiers.remove(name);
        if in_file {
            self.removed_tiers.insert(name.to_owned());
        }
    }

    /// Records `rule add`.
    pub fn add_rule(&mut self, rule: &RuleSpec) {
        let key = rule.cidr.to_string();
        self.removed_rules.remove(&key);
        self.rules.insert(key, rule.target.clone());
    }

    /// Records `rule rm` (`in_file`: the config file defines it).
    pub fn remove_rule(&mut self, cidr: &ipnet::IpNet, in_file: bool) {
        let key = cidr.to_string();
        self.rules.remove(&key);
        if in_file {
            self.removed_rules.insert(key);
        }
    }
}

impl State {
    /// Gives every tier and route of `config` an index, keeping existing
    /// assignments. Indices of tiers (routes) no longer configured stay
    /// reserved (one that comes back finds its counters and, for a route,
    /// its ceiling's state) until a new one needs one. Returns the route
    /// indices taken over from routes that are gone: their ceilings and
    /// counters are to be reset (`Maps::reset_routes`).
    pub fn assign_indices(&mut self, config: &Config) -> Result<Vec<u32>, StateError> {
        let tiers = config.tiers.iter().map(|t| t.name.as_str());
        assign(&mut self.tier_indices, tiers, MAX_TIERS).ok_or(StateError::NoFreeSlot)?;
        let routes = config.routes.iter().map(|r| r.name.as_str());
        assign(&mut self.route_indices, routes, MAX_ROUTES).ok_or(StateError::NoFreeRouteSlot)
    }

    pub fn route_index(&self, route: &str) -> Option<u32> {
        self.route_indices.get(route).copied()
    }

    pub fn index_of(&self, tier: &str) -> Option<u32> {
        self.tier_indices.get(tier).copied()
    }
}

/// Gives each of `names` an index below `max` in `indices`, keeping the
/// ones it has; reclaims the lowest index of a name not in `names` when
/// every index is taken. Returns the reclaimed indices; `None` when there is
/// none to reclaim.
fn assign<'a>(
    indices: &mut BTreeMap<String, u32>,
    names: impl Iterator<Item = &'a str> + Clone,
    max: u32,
) -> Option<Vec<u32>> {
    let wanted: BTreeSet<&str> = names.clone().collect();
    let mut reclaimed = Vec::new();
    for name in names {
        if indices.contains_key(name) {
            continue;
        }
        let used: BTreeSet<u32> = indices.values().copied().collect();
        let index = match (0..max).find(|i| !used.contains(i)) {
            Some(i) => i,
            None => {
                let (gone, index) = indices
                    .iter()
                    .filter(|(n, _)| !wanted.contains(n.as_str()))
                    .min_by_key(|(_, i)| **i)
                    .map(|(n, i)| (n.clone(), *i))?;
                indices.remove(&gone);
                reclaimed.push(index);
                index
            }
        };
        indices.insert(name.to_owned(), index);
    }
    Some(reclaimed)
}

/// Why the state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state file {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error(
        "the state file {} is corrupt ({error}); it holds the changes made with the CLI: fix it or move it aside to start without them", path.display()
    )]
    Corrupt {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("no free tier slot (at most {MAX_TIERS} tiers)")]
    NoFreeSlot,
    #[error("no free route slot (at most {MAX_ROUTES} routes)")]
    NoFreeRouteSlot,
}

/// Reads the state file; a missing file is an empty state.
pub fn load(path: &Path) -> Result<State, StateError> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(State {
                version: STATE_VERSION,
                ..State::default()
            });
        }
        Err(error) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                error,
            });
        }
    };
    serde_json::from_slice(&text).map_err(|error| StateError::Corrupt {
        path: path.to_owned(),
        error,
    })
}

/// Writes the state atomically and durably: a crash leaves either the old or
/// the new file, never a mix, and once this returns the new one survives a
/// power cut.
pub fn save(path: &Path, state: &State) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    json.push(b'\n');
    write_atomic(path, &json)
}

/// The file next to the state file that keeps the API inventory.
pub fn inventory_path(state_file: &Path) -> PathBuf {
    state_file.with_file_name("inventory.json")
}

/// Writes `bytes` to `path` atomically and durably (see [`save`]), mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "state path has no file name")
    })?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{self, ConfigSource},
        spec::LimitSpec,
    };

    fn file_config() -> Config {
        config::parse(
            r#"
default_tier = "free"
[[tier]]
name = "free"
packets = "10/s"
[[tier]]
name = "gold"
packets = "100/s"
[[rule]]
cidr = "10.0.0.0/8"
tier = "gold"
"#,
            ConfigSource::Embedded,
        )
        .unwrap()
    }

    #[test]
    fn overlay_sets_removes_and_validates() {
        let file = file_config();
        let mut o = Overlay::default();
        let mut silver = TierSpec::unlimited("silver");
        silver.packets = Some(LimitSpec {
            rate: "50/s".into(),
            burst: Some(5),
        });
        o.set_tier(silver.clone());
        o.add_rule(&RuleSpec {
            cidr: "192.0.2.0/24".parse().unwrap(),
            target: RuleTarget::Tier("silver".into()),
        });
        o.remove_rule(&"10.0.0.0/8".parse().unwrap(), true);
        o.remove_tier("gold", true);
        let c = o.apply(&file).unwrap();
        assert_eq!(c.tier_names(), "free, silver");
        assert_eq!(c.tier("silver"), Some(&silver));
        assert_eq!(c.rules.len(), 1);
        assert_eq!(c.rules[0].target, RuleTarget::Tier("silver".into()));

        // Removing a tier a rule still uses fails validation.
        let mut bad = o.clone();
        bad.remove_tier("silver", false);
        assert!(
            bad.apply(&file)
                .unwrap_err()
                .to_string()
                .contains("no such tier")
        );

        // Setting a removed tier again brings it back.
        o.set_tier(TierSpec::unlimited("gold"));
        assert!(
            o.apply(&file)
                .unwrap()
                .tier("gold")
                .unwrap()
                .packets
                .is_none()
        );
    }

    /// The state file (CLI changes on top of the file) goes through the same
    /// validation as the file and each CLI change: an impossible stored tier
    /// is refused in the same words as `tier set` would use.
    #[test]
    fn stored_cli_changes_are_checked_by_the_same_rules() {
        let file = file_config();
        let mut overlay = Overlay::default();
        let mut t = TierSpec::unlimited("t");
        t.packets = Some(LimitSpec {
            rate: "10/s".into(),
            burst: Some(0),
        });
        overlay.set_tier(t);
        assert_eq!(
            overlay.apply(&file).unwrap_err().to_string(),
            "with the changes made with the CLI: tier \"t\": packets_burst = 0: must be at least 1"
        );
    }

    #[test]
    fn indices_are_stable_and_reclaimed_only_when_needed() {
        let mut s = State::default();
        let c = file_config();
        s.assign_indices(&c).unwrap();
        assert_eq!(s.index_of("free"), Some(0));
        assert_eq!(s.index_of("gold"), Some(1));
        let mut c2 = c.clone();
        c2.tiers.remove(0);
        c2.tiers.push(TierSpec::unlimited("new"));
        s.assign_indices(&c2).unwrap();
        assert_eq!(s.index_of("gold"), Some(1));
        assert_eq!(s.index_of("new"), Some(2), "free's index stays reserved");
        assert_eq!(s.index_of("free"), Some(0));
        // Fill every slot: the gone tier's index is reclaimed.
        let mut c3 = c2.clone();
        for i in 0..62 {
            c3.tiers.push(TierSpec::unlimited(&format!("t{i}")));
        }
        s.assign_indices(&c3).unwrap();
        assert_eq!(s.index_of("free"), None);
        assert_eq!(s.tier_indices.len(), 64);
        let mut seen: Vec<u32> = s.tier_indices.values().copied().collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 64);
    }

    #[test]
    fn routes_keep_their_indices_and_cli_routes_survive_in_the_overlay() {
        let file = config::parse(
            "[[tier]]\nname = \"default\"\n[[route]]\nname = \"a\"\nmatch = \"GET /a\"\n[[route]]\nname = \"b\"\nport = 80\n",
            ConfigSource::Embedded,
        )
        .unwrap();
        let mut s = State::default();
        s.assign_indices(&file).unwrap();
        assert_eq!((s.route_index("a"), s.route_index("b")), (Some(0), Some(1)));
        let mut o = Overlay::default();
        o.remove_route("a", true);
        let (_, c) = file
            .with_route(&crate::spec::RouteInput {
                name: "c".into(),
                matches: Some("POST /c".into()),
                cost: Some(5),
                ..Default::default()
            })
            .unwrap();
        o.add_route(c.clone());
        let effective = o.apply(&file).unwrap();
        assert_eq!(
            effective
                .routes
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
        s.assign_indices(&effective).unwrap();
        // a's index stays reserved; c gets the next free one.
        assert_eq!(s.route_index("a"), Some(0));
        assert_eq!(s.route_index("c"), Some(2));
        // The overlay round-trips through JSON (the state file).
        s.overlay = o;
        let back: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.overlay.routes["c"], c);
        // With every index taken, a new route takes over the lowest index
        // of a route that is gone, and says so (its ceiling is to be reset).
        let mut full = effective.clone();
        for i in 0..MAX_ROUTES - 3 {
            full.routes.push(RouteSpec {
                host: None,
                name: format!("r{i}"),
                ..c.clone()
            });
        }
        assert_eq!(s.assign_indices(&full).unwrap(), Vec::<u32>::new());
        full.routes.push(RouteSpec {
            name: "late".into(),
            ..c.clone()
        });
        assert_eq!(s.assign_indices(&full).unwrap(), vec![0]);
        assert_eq!((s.route_index("late"), s.route_index("a")), (Some(0), None));
        // A state file from before routes reads as no routes.
        let old: State = serde_json::from_str(r#"{"version":1,"overlay":{"tiers":{}}}"#).unwrap();
        assert!(old.route_indices.is_empty() && old.overlay.routes.is_empty());
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("tg-state-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert_eq!(load(&path).unwrap().version, STATE_VERSION);
        let mut s = State {
            version: STATE_VERSION,
            ..State::default()
        };
        s.tier_indices.insert("free".into(), 3);
        s.overlay.set_tier(TierSpec::unlimited("x"));
        s.attachments.insert("eth0".into(), AttachMode::Native);
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), s);
        fs::write(&path, "{not json").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("is corrupt"));
        // A missing directory fails (and leaves nothing behind).
        assert!(save(&dir.join("nope/state.json"), &s).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
