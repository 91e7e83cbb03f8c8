//! The config transaction: what the kernel should hold for a configuration,
//! writing only the difference, and commit/rollback/reload around it; every
//! commit publishes the configuration in force to the tasks.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use anyhow::{Context as _, Result};
use ipnet::IpNet;
use tollgate_common::{
    MAX_TIERS, RULE_TIER, RuleValue, SETTINGS_COUNT_REQUESTS, TierConfig,
    route::{RouteValue, route_key_for_host},
};
use tracing::{error, info, warn};

use super::{Daemon, error::CommandError};
use crate::{
    config::{self, Config, Effective, Published, Subscription},
    crowdsec,
    datapath::{kernel::Maps, routes::RoutePrefix},
    spec,
    state::{self, Overlay},
};

/// The adaptive factors in force, by tier name: a tier's per-source limits
/// and aggregate ceiling are its configured ones × its factor
/// (`spec::scale_tier`); a tier not named here runs at its configured limits.
pub(super) type Factors = BTreeMap<String, f64>;

/// Rules the kernel holds besides the configuration's: API-key pins and bans.
#[derive(Clone, Copy)]
pub(super) struct Layers<'a> {
    /// Sources pinned to an API key's tier.
    pub pinned: &'a BTreeMap<IpNet, RuleValue>,
    /// Banned sources: expiring denies (`daemon/bans.rs`).
    pub banned: &'a BTreeMap<IpNet, RuleValue>,
    /// CrowdSec's ban decisions (`crowdsec::layer`).
    pub crowdsec: &'a crowdsec::Layer,
}

#[cfg(test)]
impl Layers<'_> {
    /// No rules besides the configuration's.
    pub(super) fn none() -> Layers<'static> {
        type Empty = (BTreeMap<IpNet, RuleValue>, crowdsec::Layer);
        static EMPTY: std::sync::LazyLock<Empty> = std::sync::LazyLock::new(Default::default);
        Layers {
            pinned: &EMPTY.0,
            banned: &EMPTY.0,
            crowdsec: &EMPTY.1,
        }
    }
}

/// What the kernel's tier table and rule tries should hold for a
/// configuration: a pure function of the configuration, the tier indices, the
/// extra rule layers and the adaptive factors (no I/O, unit-tested without
/// root). [`apply`] writes the
/// difference between this and what the maps hold.
#[derive(Debug, PartialEq)]
pub(super) struct KernelState {
    /// The tier table by kernel index: `None` for a slot no configured tier
    /// uses (it is deactivated).
    pub tiers: Vec<Option<TierConfig>>,
    /// Index of the tier of sources no rule matches.
    pub default_tier: u32,
    /// Every rule the tries should hold, pins included.
    pub rules: BTreeMap<IpNet, RuleValue>,
    /// Every entry of the route trie: a route without a port once per HTTP port.
    pub routes: BTreeMap<RoutePrefix, RouteValue>,
    /// What a request head of unknown route charges (`Settings::split_head_cost`):
    /// the dearest enforced route's cost, at least 1.
    pub split_head_cost: u32,
}

/// Name -> kernel index of the tiers and of the routes (`State`'s).
#[derive(Clone, Copy)]
pub(super) struct Indices<'a> {
    pub tiers: &'a BTreeMap<String, u32>,
    pub routes: &'a BTreeMap<String, u32>,
}

impl<'a> Indices<'a> {
    pub(super) fn of(state: &'a state::State) -> Indices<'a> {
        Indices {
            tiers: &state.tier_indices,
            routes: &state.route_indices,
        }
    }
}

pub(super) fn desired(
    cfg: &Config,
    all: Indices<'_>,
    layers: Layers<'_>,
    factors: &Factors,
) -> Result<KernelState> {
    let indices = all.tiers;
    let index = |name: &str| {
        indices
            .get(name)
            .copied()
            .filter(|i| *i < MAX_TIERS)
            .with_context(|| format!("tier {name} has no index"))
    };
    let mut tiers = vec![None; MAX_TIERS as usize];
    for t in &cfg.tiers {
        let mut k = t.to_kernel()?;
        if t.new_sources.is_none() {
            k.new_sources = spec::default_new_sources(cfg.maps.sources_v4.min(cfg.maps.sources_v6));
        }
        // Only a tier that is adaptive in enforce mode now: a commit that
        // made it plain or shadow applies its configured limits at once.
        let enforced = t
            .adaptive
            .as_ref()
            .is_some_and(|a| a.mode != Some(spec::TierMode::Shadow));
        if let Some(f) = factors.get(&t.name)
            && enforced
        {
            k = spec::scale_tier(&k, *f);
        }
        tiers[index(&t.name)? as usize] = Some(k);
    }
    let default_tier = index(&cfg.default_tier)?;
    let mut rules = BTreeMap::new();
    for r in &cfg.rules {
        let v = r
            .target
            .to_kernel(|t| index(t).ok(), default_tier)
            .with_context(|| format!("rule {}: {} has no index", r.cidr, r.target))?;
        rules.insert(r.cidr, v);
    }
    // Bans hold over tier rules (and pins), never over a configured allow or
    // deny for the same prefix.
    for (net, v) in layers.banned {
        match rules.get(net) {
            Some(r) if r.action != RULE_TIER => {}
            _ => {
                rules.insert(*net, *v);
            }
        }
    }
    // API-key pins hold on top of tier rules, never over allow or deny.
    for (net, v) in layers.pinned {
        match rules.get(net) {
            Some(r) if r.action != RULE_TIER => {}
            _ => {
                rules.insert(*net, *v);
            }
        }
    }
    // CrowdSec bans on top (their precedence: `crowdsec::layer`).
    layers.crowdsec.overlay(&mut rules, cfg, default_tier);
    let mut routes = BTreeMap::new();
    let mut split_head_cost = 1;
    for r in &cfg.routes {
        let k = r.to_kernel()?;
        let index = all
            .routes
            .get(&r.name)
            .copied()
            .filter(|i| *i < tollgate_common::route::MAX_ROUTES)
            .with_context(|| format!("route {} has no index", r.name))?;
        if k.flags & tollgate_common::route::ROUTE_SHADOW == 0 {
            split_head_cost = split_head_cost.max(k.cost);
        }
        let line = r.line.as_deref().unwrap_or("").as_bytes();
        for port in r.ports(&cfg.http.ports) {
            let key = route_key_for_host(port, r.host_tag(), line)
                .with_context(|| format!("route {}: its match is too long", r.name))?;
            let value = RouteValue {
                index,
                cost: k.cost,
                ceiling: k.ceiling,
                flags: k.flags,
                _reserved: 0,
            };
            routes.insert(key, value);
        }
    }
    Ok(KernelState {
        tiers,
        default_tier,
        rules,
        routes,
        split_head_cost,
    })
}

/// Writes `cfg` into the maps: tiers, default tier, rules; deactivates tier
/// slots no configured tier uses. Only entries that differ are written, and
/// bucket state (sources, aggregate) is never touched.
pub(super) fn apply(
    maps: &mut Maps,
    cfg: &Config,
    indices: Indices<'_>,
    layers: Layers<'_>,
    factors: &Factors,
) -> Result<()> {
    let want = desired(cfg, indices, layers, factors)?;
    // The program counts request heads only while some tier limits requests;
    // switched on before such a tier is written, off after it is gone.
    let count_requests = want.tiers.iter().flatten().any(TierConfig::limits_requests);
    let current = maps.settings()?;
    if count_requests && current.flags & SETTINGS_COUNT_REQUESTS == 0 {
        maps.set_settings(tollgate_common::Settings {
            flags: current.flags | SETTINGS_COUNT_REQUESTS,
            ..current
        })?;
    }
    for (i, tier) in (0..MAX_TIERS).zip(&want.tiers) {
        if let Some(k) = tier
            && maps.tier(i)? != *k
        {
            maps.set_tier(i, k)?;
        }
    }
    let current = maps.settings()?;
    let wanted = sampling_settings(
        &cfg.http,
        tollgate_common::Settings {
            default_tier: want.default_tier,
            split_head_cost: want.split_head_cost,
            flags: if count_requests {
                current.flags | SETTINGS_COUNT_REQUESTS
            } else {
                current.flags & !SETTINGS_COUNT_REQUESTS
            },
            ..current
        },
    );
    if current != wanted {
        maps.set_settings(wanted)?;
    }
    let current: BTreeMap<IpNet, RuleValue> = maps.rules()?.into_iter().collect();
    let upsert: Vec<(IpNet, RuleValue)> = want
        .rules
        .iter()
        .filter(|(net, v)| current.get(net) != Some(v))
        .map(|(n, v)| (*n, *v))
        .collect();
    let remove: Vec<IpNet> = current
        .keys()
        .filter(|n| !want.rules.contains_key(n))
        .copied()
        .collect();
    maps.update_rules(&upsert, &remove)?;
    // Routes after the settings: `update_routes` keeps the "look up routes"
    // flag in step with the trie.
    let current: BTreeMap<RoutePrefix, RouteValue> = maps.routes()?.into_iter().collect();
    let upsert: Vec<(RoutePrefix, RouteValue)> = want
        .routes
        .iter()
        .filter(|(k, v)| current.get(k) != Some(v))
        .map(|(k, v)| (*k, *v))
        .collect();
    let remove: Vec<RoutePrefix> = current
        .keys()
        .filter(|k| !want.routes.contains_key(k))
        .copied()
        .collect();
    if !upsert.is_empty() || !remove.is_empty() {
        maps.update_routes(&upsert, &remove)?;
    }
    for (i, tier) in (0..MAX_TIERS).zip(&want.tiers) {
        if tier.is_none() && maps.tier(i)?.is_active() {
            maps.set_tier(i, &TierConfig::default())?;
        }
    }
    Ok(())
}

/// The kernel's sampling settings for `[http]`, keeping `base`'s other fields.
pub(super) fn sampling_settings(
    http: &config::HttpConfig,
    base: tollgate_common::Settings,
) -> tollgate_common::Settings {
    let mut ports = [0u16; tollgate_common::MAX_HTTP_PORTS];
    for (slot, port) in ports.iter_mut().zip(&http.ports) {
        *slot = *port;
    }
    tollgate_common::Settings {
        http_ports: ports,
        http_snap_len: http.snap_len,
        http_sample_every: http.sample_every,
        http_budget: tollgate_common::Limit::per_period(
            http.budget_per_second,
            1_000_000_000,
            http.budget_burst,
        )
        .unwrap_or(tollgate_common::Limit::UNLIMITED),
        verdict_sample_every: http.verdict_sample_every,
        ..base
    }
}

impl Daemon {
    pub(super) fn state_path(&self) -> &Path {
        &self.file.state_file
    }

    /// Makes `overlay` (and, for a reload, `new_file`) effective: validates,
    /// applies to the kernel, persists, and only then commits in memory and
    /// publishes it to the tasks. On any failure the kernel is put back as it
    /// was and nothing changes.
    pub(super) fn commit(
        &mut self,
        new_file: Option<Config>,
        overlay: Overlay,
    ) -> Result<(), CommandError> {
        let file = new_file.as_ref().unwrap_or(&self.file);
        let effective = overlay.apply(file)?;
        let mut state = self.state.clone();
        state.overlay = overlay;
        let reclaimed = state.assign_indices(&effective)?;
        // A route index taken over from a route that is gone starts idle.
        if let Err(e) = self.maps.reset_routes(&reclaimed) {
            return Err(CommandError::Kernel(e.into()));
        }
        if let Err(e) = apply(
            &mut self.maps,
            &effective,
            Indices::of(&state),
            Layers {
                pinned: &self.pinned,
                banned: &self.banned,
                crowdsec: &self.crowdsec,
            },
            &self.factors,
        ) {
            self.rollback();
            return Err(CommandError::Kernel(e));
        }
        if state != self.state
            && let Err(e) = state::save(self.state_path(), &state)
        {
            self.rollback();
            self.state_write_failures += 1;
            error!(state_file = %self.state_path().display(), error = %e,
                "could not save a change; it was rolled back and is not in effect");
            return Err(CommandError::Save {
                path: self.state_path().to_owned(),
                error: e,
            });
        }
        self.state = state;
        self.effective = effective;
        if let Some(f) = new_file {
            self.file = f;
        }
        self.publish();
        Ok(())
    }

    /// Puts the kernel back as `effective` has it after a failed change.
    pub(super) fn rollback(&mut self) {
        if let Err(e) = self.apply_in_force() {
            error!(error = %format!("{e:#}"), "rolling back a failed change also failed: the kernel may hold a partial change");
        }
        // Never the failed change: the configuration still in force, again,
        // because the kernel's rules were rewritten from it (which dropped
        // the cluster sync's denies: the sync puts them back).
        self.publish();
    }

    /// Writes what the configuration in force, every rule layer and the
    /// adaptive factors make of the kernel's maps (only the difference).
    fn apply_in_force(&mut self) -> Result<()> {
        apply(
            &mut self.maps,
            &self.effective,
            Indices::of(&self.state),
            Layers {
                pinned: &self.pinned,
                banned: &self.banned,
                crowdsec: &self.crowdsec,
            },
            &self.factors,
        )
    }

    /// Sends `effective` and the tier indices to every task, as the next
    /// generation. Only [`Daemon::commit`] and [`Daemon::rollback`] call it,
    /// once the kernel holds exactly this configuration.
    fn publish(&mut self) {
        self.bans_rewritten();
        let generation = self.published.borrow().generation + 1;
        self.published.send_replace(Arc::new(Effective::new(
            generation,
            self.effective.clone(),
            self.state.tier_indices.clone(),
        )));
    }

    /// Makes `factors` the adaptive factors the kernel holds: writes the
    /// tiers whose scaled limits change (nothing else differs). On failure
    /// the kernel is put back with the factors in force.
    pub(super) fn set_factors(&mut self, factors: Factors) {
        if factors == self.factors {
            return;
        }
        let old = std::mem::replace(&mut self.factors, factors);
        if let Err(e) = self.apply_in_force() {
            error!(error = %format!("{e:#}"), "adaptive: writing the scaled limits failed; the previous ones stay");
            self.factors = old;
            self.rollback();
        }
    }

    /// The configuration in force, as last published.
    pub(super) fn in_force(&self) -> Published {
        self.published.borrow().clone()
    }

    /// A task's subscription to the configuration in force.
    pub(super) fn subscribe(&self) -> Subscription {
        self.published.subscribe()
    }

    pub(super) fn reload(&mut self) -> Result<String, CommandError> {
        let result = self.reload_inner();
        match result {
            Ok(_) => self.reloads += 1,
            Err(_) => self.reload_failures += 1,
        }
        result
    }

    pub(super) fn reload_inner(&mut self) -> Result<String, CommandError> {
        let mut new_file = self
            .opts
            .load_config()
            .map_err(|e| CommandError::Reload(Box::new(e.into())))?;
        if let Some(note) = new_file.notice() {
            warn!("{note}");
        }
        // These only take effect on a restart; keep what is running.
        for (what, changed) in [
            ("interfaces", new_file.interfaces != self.file.interfaces),
            ("mode", new_file.mode != self.file.mode),
            ("maps", new_file.maps != self.file.maps),
            ("socket", new_file.socket != self.file.socket),
            ("pin_dir", new_file.pin_dir != self.file.pin_dir),
            ("state_file", new_file.state_file != self.file.state_file),
            ("allow_uids", new_file.allow_uids != self.file.allow_uids),
            ("[cluster]", new_file.cluster != self.file.cluster),
            ("[crowdsec]", new_file.crowdsec != self.file.crowdsec),
        ] {
            if changed {
                warn!("reload: {what} changed in the config; restart the daemon to apply it");
            }
        }
        new_file.interfaces = self.file.interfaces.clone();
        new_file.mode = self.file.mode;
        new_file.maps = self.file.maps;
        new_file.socket = self.file.socket.clone();
        new_file.pin_dir = self.file.pin_dir.clone();
        new_file.state_file = self.file.state_file.clone();
        new_file.allow_uids = self.file.allow_uids.clone();
        new_file.cluster = self.file.cluster.clone();
        new_file.crowdsec = self.file.crowdsec.clone();
        let overlay = self.state.overlay.clone();
        let hidden = crate::overrides::overridden(&self.file, &new_file, &overlay);
        self.commit(Some(new_file), overlay)
            .map_err(|e| CommandError::Reload(Box::new(e)))?;
        for o in &hidden {
            warn!(what = %o.what, field = %o.field, file = %o.file, cli = %o.cli,
                "reload: a change made with the CLI overrides the file's new value ({o})");
        }
        let mut msg = format!(
            "reloaded {}: {} tiers, {} rules, {} routes{}",
            self.file.source,
            self.effective.tiers.len(),
            self.effective.rules.len(),
            self.effective.routes.len(),
            if self.state.overlay.is_empty() {
                String::new()
            } else {
                " (including changes made with the CLI)".to_owned()
            }
        );
        info!("{msg}");
        if !hidden.is_empty() {
            msg.push_str(&format!(
                "\nwarning: {} value{} of the file {} overridden by changes made with the CLI:",
                hidden.len(),
                if hidden.len() == 1 { "" } else { "s" },
                if hidden.len() == 1 { "is" } else { "are" },
            ));
            for o in &hidden {
                msg.push_str(&format!("\n  {o}"));
            }
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, parse};
    use tollgate_common::{RULE_ALLOW, RULE_DENY};

    fn config() -> Config {
        parse(
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
[[rule]]
cidr = "192.0.2.1/32"
action = "allow"
[[rule]]
cidr = "198.51.100.0/24"
action = "deny"
"#,
            ConfigSource::Embedded,
        )
        .unwrap()
    }

    fn indices() -> BTreeMap<String, u32> {
        [("free".to_owned(), 3), ("gold".to_owned(), 0)].into()
    }

    const NO_ROUTES: &BTreeMap<String, u32> = &BTreeMap::new();

    fn ix(tiers: &BTreeMap<String, u32>) -> Indices<'_> {
        Indices {
            tiers,
            routes: NO_ROUTES,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn a_factor_scales_its_tier_only() {
        let mut cfg = config();
        let adaptive = |mode| spec::AdaptiveSpec {
            signal: "cpu".into(),
            threshold: 40.0,
            recover: None,
            min: None,
            decrease: None,
            increase: None,
            calm: None,
            pressure: None,
            mode,
        };
        for t in &mut cfg.tiers {
            t.adaptive = Some(adaptive(None));
        }
        let factors: Factors = [("free".to_owned(), 0.5)].into();
        let plain = desired(&cfg, ix(&indices()), Layers::none(), &Factors::new()).unwrap();
        let scaled = desired(&cfg, ix(&indices()), Layers::none(), &factors).unwrap();
        let free = indices()["free"] as usize;
        for (i, (a, b)) in plain.tiers.iter().zip(&scaled.tiers).enumerate() {
            if i == free {
                let (a, b) = (a.unwrap(), b.unwrap());
                assert_eq!(b, spec::scale_tier(&a, 0.5));
                assert_ne!(a, b);
            } else {
                assert_eq!(a, b);
            }
        }
        assert_eq!(plain.rules, scaled.rules);
        // Made shadow (or plain) by a commit: the configured limits at once.
        for t in &mut cfg.tiers {
            t.adaptive = Some(adaptive(Some(spec::TierMode::Shadow)));
        }
        let shadow = desired(&cfg, ix(&indices()), Layers::none(), &factors).unwrap();
        assert_eq!(shadow.tiers, plain.tiers);
    }

    #[test]
    fn tiers_land_at_their_indices_and_other_slots_are_inactive() {
        let cfg = config();
        let k = desired(&cfg, ix(&indices()), Layers::none(), &Factors::new()).unwrap();
        assert_eq!(k.default_tier, 3);
        assert_eq!(k.tiers.len(), MAX_TIERS as usize);
        // A tier without `new_sources` gets the budget derived from the maps.
        let with_budget = |name: &str| {
            let mut t = cfg.tier(name).unwrap().to_kernel().unwrap();
            t.new_sources = spec::default_new_sources(cfg.maps.sources_v4.min(cfg.maps.sources_v6));
            Some(t)
        };
        assert_eq!(k.tiers[3], with_budget("free"));
        assert_eq!(k.tiers[0], with_budget("gold"));
        assert!(k.tiers[0].unwrap().admits_new_sources());
        assert_eq!(k.tiers.iter().filter(|t| t.is_some()).count(), 2);
    }

    #[test]
    fn rules_map_to_kernel_values_with_the_default_tier_for_allow_and_deny() {
        let k = desired(&config(), ix(&indices()), Layers::none(), &Factors::new()).unwrap();
        let v = |action, tier| RuleValue {
            action,
            tier,
            expires_ns: 0,
        };
        assert_eq!(k.rules[&net("10.0.0.0/8")], v(RULE_TIER, 0));
        assert_eq!(k.rules[&net("192.0.2.1/32")], v(RULE_ALLOW, 3));
        assert_eq!(k.rules[&net("198.51.100.0/24")], v(RULE_DENY, 3));
        assert_eq!(k.rules.len(), 3);
    }

    #[test]
    fn pins_override_tier_rules_but_never_allow_or_deny() {
        let pin = RuleValue {
            action: RULE_TIER,
            tier: 3,
            expires_ns: 0,
        };
        let pinned: BTreeMap<IpNet, RuleValue> = [
            (net("10.0.0.0/8"), pin),
            (net("198.51.100.0/24"), pin),
            (net("203.0.113.7/32"), pin),
        ]
        .into();
        let k = desired(
            &config(),
            ix(&indices()),
            Layers {
                pinned: &pinned,
                banned: &BTreeMap::new(),
                crowdsec: &crowdsec::Layer::default(),
            },
            &Factors::new(),
        )
        .unwrap();
        assert_eq!(k.rules[&net("10.0.0.0/8")], pin);
        assert_eq!(k.rules[&net("198.51.100.0/24")].action, RULE_DENY);
        assert_eq!(k.rules[&net("203.0.113.7/32")], pin);
    }

    #[test]
    fn bans_override_tier_rules_and_pins_but_never_allow_or_deny() {
        let pin = RuleValue {
            action: RULE_TIER,
            tier: 3,
            expires_ns: 0,
        };
        let ban = RuleValue {
            action: RULE_DENY,
            tier: 3,
            expires_ns: 123_456,
        };
        let pinned: BTreeMap<IpNet, RuleValue> =
            [(net("10.0.0.0/8"), pin), (net("203.0.113.7/32"), pin)].into();
        let banned: BTreeMap<IpNet, RuleValue> = [
            (net("10.0.0.0/8"), ban),
            (net("192.0.2.1/32"), ban),
            (net("198.51.100.0/24"), ban),
            (net("203.0.113.7/32"), ban),
            (net("203.0.113.8/32"), ban),
        ]
        .into();
        let k = desired(
            &config(),
            ix(&indices()),
            Layers {
                pinned: &pinned,
                banned: &banned,
                crowdsec: &crowdsec::Layer::default(),
            },
            &Factors::new(),
        )
        .unwrap();
        // Over a tier rule and over pins: the ban.
        assert_eq!(k.rules[&net("10.0.0.0/8")], ban);
        assert_eq!(k.rules[&net("203.0.113.7/32")], ban);
        assert_eq!(k.rules[&net("203.0.113.8/32")], ban);
        // A configured allow or deny stays as configured (forever).
        assert_eq!(k.rules[&net("192.0.2.1/32")].action, RULE_ALLOW);
        assert_eq!(k.rules[&net("198.51.100.0/24")].expires_ns, 0);
        assert_eq!(k.rules.len(), 5);
    }

    #[test]
    fn crowdsec_bans_are_a_layer_over_pins_and_tier_rules_but_never_over_allow() {
        use crate::config::DecisionScope;
        let ban = crowdsec::Ban {
            id: 7,
            scope: DecisionScope::Ip,
            origin: "cscli".into(),
            scenario: "manual".into(),
            expires_ns: 5_000,
        };
        let mut bans = crowdsec::Layer::default();
        bans.update(&crowdsec::Change {
            upsert: vec![
                (net("203.0.113.7/32"), ban.clone()),
                (net("192.0.2.1/32"), ban.clone()),
                (net("10.1.1.1/32"), ban.clone()),
            ],
            remove: vec![],
        });
        let pin = RuleValue {
            action: RULE_TIER,
            tier: 0,
            expires_ns: 0,
        };
        let pinned: BTreeMap<IpNet, RuleValue> = [(net("203.0.113.7/32"), pin)].into();
        let k = desired(
            &config(),
            ix(&indices()),
            Layers {
                pinned: &pinned,
                banned: &BTreeMap::new(),
                crowdsec: &bans,
            },
            &Factors::new(),
        )
        .unwrap();
        let deny = |tier| RuleValue {
            action: RULE_DENY,
            tier,
            expires_ns: 5_000,
        };
        // Over the pin, falling back to the pin's tier when it ends.
        assert_eq!(k.rules[&net("203.0.113.7/32")], deny(0));
        // Inside the gold /8: denies, then gold.
        assert_eq!(k.rules[&net("10.1.1.1/32")], deny(0));
        // The allow rule stays.
        assert_eq!(k.rules[&net("192.0.2.1/32")].action, RULE_ALLOW);
        assert_eq!(k.rules.len(), 5);
    }

    #[test]
    fn a_tier_without_an_index_is_an_error() {
        let mut ix = indices();
        ix.remove("gold");
        let e = desired(&config(), self::ix(&ix), Layers::none(), &Factors::new()).unwrap_err();
        assert_eq!(e.to_string(), "tier gold has no index");
    }

    fn routed() -> Config {
        parse(
            r#"
[[tier]]
name = "default"
requests = "100/s"
[http]
ports = [80, 8080]
[[route]]
name = "search"
match = "POST /api/search"
cost = 20
ceiling = "200/s"
ceiling_burst = 20
[[route]]
name = "gets"
match = "GET"
port = 8080
[[route]]
name = "admin"
port = 80
cost = 50
mode = "shadow"
"#,
            ConfigSource::Embedded,
        )
        .unwrap()
    }

    #[test]
    fn routes_are_written_once_per_port_at_their_indices() {
        let tiers: BTreeMap<String, u32> = [("default".to_owned(), 0)].into();
        let routes: BTreeMap<String, u32> = [
            ("search".to_owned(), 7),
            ("gets".to_owned(), 0),
            ("admin".to_owned(), 255),
        ]
        .into();
        let all = Indices {
            tiers: &tiers,
            routes: &routes,
        };
        let k = desired(&routed(), all, Layers::none(), &Factors::new()).unwrap();
        let search = RouteValue {
            index: 7,
            cost: 20,
            ceiling: tollgate_common::Limit::per_period(200, 1_000_000_000, 20).unwrap(),
            flags: 0,
            _reserved: 0,
        };
        let key = |port, line: &str| route_key_for_host(port, 0, line.as_bytes()).unwrap();
        assert_eq!(k.routes[&key(80, "POST /api/search")], search);
        assert_eq!(k.routes[&key(8080, "POST /api/search")], search);
        assert_eq!(k.routes[&key(8080, "GET ")].index, 0);
        assert_eq!(k.routes[&key(8080, "GET ")].cost, 1);
        assert!(!k.routes.contains_key(&key(80, "GET ")));
        let admin = k.routes[&key(80, "")];
        assert_eq!((admin.index, admin.cost), (255, 50));
        assert!(admin.is_shadow() && admin.charge() == 1);
        assert_eq!(k.routes.len(), 4);
        // The dearest enforced route: a shadow route's cost is not charged.
        assert_eq!(k.split_head_cost, 20);
        // No routes: nothing in the trie, split heads cost 1.
        let k = desired(&config(), ix(&indices()), Layers::none(), &Factors::new()).unwrap();
        assert!(k.routes.is_empty());
        assert_eq!(k.split_head_cost, 1);
    }

    #[test]
    fn a_route_without_an_index_is_an_error() {
        let tiers: BTreeMap<String, u32> = [("default".to_owned(), 0)].into();
        let e = desired(&routed(), ix(&tiers), Layers::none(), &Factors::new()).unwrap_err();
        assert_eq!(e.to_string(), "route search has no index");
    }
}
