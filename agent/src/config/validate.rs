//! The one validation every configuration goes through: the file (at start
//! and on reload), the file with the changes made with the CLI (the state
//! file), and each `tier set` / `rule add` / `route add` before it is
//! applied. Rules about one tier or route on its own are `TierSpec::to_kernel`'s
//! and `RouteSpec::to_kernel`'s and run from here; the rules relating tiers,
//! rules, routes, API keys, `[http]` and `[cluster]` are written here.

use std::collections::HashMap;

use tollgate_common::{MAX_TIERS, route::MAX_ROUTES};

use super::{
    Config,
    error::{Invalid, Problem, Section},
};
use crate::spec::{
    GlobalField, LimitField, RouteFieldError, RouteInput, RouteSpec, RuleInput, RuleSpec,
    TargetError, TierFieldError, TierMode, TierPatch, TierSpec, parse_cidr, quoted,
};

/// A tier field's problem, placed at the `index`th tier.
pub(super) fn tier_invalid(index: usize, name: &str, e: TierFieldError) -> Invalid {
    let name = e.tier.map(|_| name.to_owned());
    Invalid::new(
        Section::Tier { index, name },
        Some(e.key),
        e.value,
        *e.problem,
    )
}

/// A route field's problem, placed at the `index`th route.
pub(super) fn route_invalid(index: usize, name: &str, e: RouteFieldError) -> Invalid {
    let name = e.route.map(|_| name.to_owned());
    Invalid::new(Section::Route { index, name }, e.key, e.value, *e.problem)
}

/// The rule an input describes, as the `index`th rule.
pub(super) fn rule_from_input(index: usize, input: &RuleInput) -> Result<RuleSpec, Invalid> {
    let cidr = parse_cidr(&input.cidr).map_err(|e| {
        Invalid::new(
            Section::Rule { index, cidr: None },
            Some("cidr"),
            Some(quoted(&input.cidr)),
            e,
        )
    })?;
    let target = input.target().map_err(|e| {
        let section = Section::Rule {
            index,
            cidr: Some(cidr),
        };
        match (&e, &input.action) {
            (TargetError::UnknownAction, Some(a)) => {
                Invalid::new(section, Some("action"), Some(quoted(a)), e)
            }
            _ => Invalid::new(section, None, None, e),
        }
    })?;
    Ok(RuleSpec { cidr, target })
}

/// Every rule that relates the parts of `c` to each other, and every tier's own.
pub fn validate(c: &Config) -> Result<(), Invalid> {
    let no_such_tier = || Problem::NoSuchTier {
        tiers: c.tier_names(),
    };
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (index, t) in c.tiers.iter().enumerate() {
        let name_at = || Section::Tier { index, name: None };
        if let Some(&f) = first.get(t.name.as_str()) {
            return Err(Invalid::new(
                name_at(),
                Some("name"),
                Some(quoted(&t.name)),
                Problem::DuplicateTier {
                    first: f,
                    first_line: None,
                },
            ));
        }
        first.insert(&t.name, index);
        if index >= MAX_TIERS as usize {
            return Err(Invalid::new(
                name_at(),
                Some("name"),
                Some(quoted(&t.name)),
                Problem::TooManyTiers {
                    count: c.tiers.len(),
                },
            ));
        }
        t.to_kernel().map_err(|e| tier_invalid(index, &t.name, e))?;
        if let Some(requests) = &t.requests
            && c.http.ports.is_empty()
        {
            return Err(Invalid::new(
                Section::Tier {
                    index,
                    name: Some(t.name.clone()),
                },
                Some("requests"),
                Some(quoted(&requests.rate)),
                Problem::RequestsNeedHttpPorts,
            ));
        }
        if c.cluster.is_none() {
            for field in GlobalField::ALL {
                if let Some(g) = t.global(field) {
                    return Err(Invalid::new(
                        Section::Tier {
                            index,
                            name: Some(t.name.clone()),
                        },
                        Some(field.name()),
                        Some(quoted(&g.rate)),
                        Problem::GlobalNeedsCluster,
                    ));
                }
            }
        }
    }
    if c.default_tier.is_empty() {
        return Err(Invalid::new(
            Section::Top,
            None,
            None,
            Problem::DefaultTierMissing {
                tiers: c.tier_names(),
            },
        ));
    }
    if c.tier(&c.default_tier).is_none() {
        return Err(Invalid::new(
            Section::Top,
            Some("default_tier"),
            Some(quoted(&c.default_tier)),
            no_such_tier(),
        ));
    }
    for (index, (_, tier)) in c.api_keys.keys.iter().enumerate() {
        if c.tier(tier).is_none() {
            return Err(Invalid::new(
                Section::ApiKey { index },
                Some("tier"),
                Some(quoted(tier)),
                no_such_tier(),
            ));
        }
    }
    let mut cidrs = HashMap::new();
    for (index, r) in c.rules.iter().enumerate() {
        if let Some(&f) = cidrs.get(&r.cidr) {
            return Err(Invalid::new(
                Section::Rule { index, cidr: None },
                Some("cidr"),
                Some(quoted(&r.cidr.to_string())),
                Problem::DuplicateRule {
                    cidr: r.cidr,
                    first: f,
                    first_line: None,
                },
            ));
        }
        cidrs.insert(r.cidr, index);
        if let crate::spec::RuleTarget::Tier(t) = &r.target
            && c.tier(t).is_none()
        {
            return Err(Invalid::new(
                Section::Rule {
                    index,
                    cidr: Some(r.cidr),
                },
                Some("tier"),
                Some(quoted(t)),
                no_such_tier(),
            ));
        }
    }
    for (i, port) in c.http.ports.iter().enumerate() {
        if c.http.ports[..i].contains(port) {
            return Err(Invalid::new(
                Section::Http,
                Some("ports"),
                Some(port.to_string()),
                Problem::ListedTwice,
            )
            .item(i));
        }
    }
    validate_routes(c)?;
    validate_responses(c)
}

/// `[[response]]` rules: unique names, a threshold, a window that can hold
/// `refused_seconds`, `ban <= max_ban`, tiers that exist, and `[http]` ports
/// for request evidence.
fn validate_responses(c: &Config) -> Result<(), Invalid> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (index, r) in c.responses.iter().enumerate() {
        let at = |key, value, problem: Problem| {
            Invalid::new(
                Section::Response {
                    index,
                    name: Some(r.name.clone()),
                },
                key,
                value,
                problem,
            )
        };
        crate::spec::check_tier_name(&r.name).map_err(|e| {
            Invalid::new(
                Section::Response { index, name: None },
                Some("name"),
                Some(quoted(&r.name)),
                e,
            )
        })?;
        if names.insert(&r.name, index).is_some() {
            return Err(Invalid::new(
                Section::Response { index, name: None },
                Some("name"),
                Some(quoted(&r.name)),
                Problem::DuplicateResponse,
            ));
        }
        if r.refused_seconds.is_none() && r.refused_over.is_none() {
            return Err(at(None, None, Problem::ResponseWithoutThreshold));
        }
        let window = r.window.as_secs();
        let age = |d: std::time::Duration| quoted(&crate::units::human_duration(d.as_secs()));
        if !(1..=crate::response::MAX_WINDOW_SECS).contains(&window) {
            return Err(at(
                Some("window"),
                Some(age(r.window)),
                Problem::ResponseWindow,
            ));
        }
        if let Some(n) = r.refused_seconds
            && u64::from(n) > window
        {
            return Err(at(
                Some("window"),
                Some(age(r.window)),
                Problem::ResponseWindowShort { least: n },
            ));
        }
        if r.ban.as_secs() < 1 {
            return Err(at(Some("ban"), Some(age(r.ban)), Problem::BanTooShort));
        }
        if r.max_ban < r.ban {
            return Err(at(
                Some("max_ban"),
                Some(age(r.max_ban)),
                Problem::MaxBanUnderBan {
                    ban: crate::units::human_duration(r.ban.as_secs()),
                },
            ));
        }
        for (i, t) in r.tiers.iter().enumerate() {
            if c.tier(t).is_none() {
                return Err(at(
                    Some("tiers"),
                    Some(quoted(t)),
                    Problem::NoSuchTier {
                        tiers: c.tier_names(),
                    },
                )
                .item(i));
            }
        }
        if r.evidence == crate::spec::Evidence::Requests && c.http.ports.is_empty() {
            return Err(at(
                Some("evidence"),
                Some(quoted(r.evidence.name())),
                Problem::ResponseNeedsHttpPorts,
            ));
        }
    }
    Ok(())
}

/// Routes against each other, the `[http]` ports and the tiers: unique names
/// and matches (a route without a port matches on every HTTP port), at most
/// [`MAX_ROUTES`], and no enforced cost a tier's requests burst cannot hold.
fn validate_routes(c: &Config) -> Result<(), Invalid> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut keys: HashMap<(u16, Option<&str>, Option<&str>), usize> = HashMap::new();
    let ports = || {
        c.http
            .ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (index, r) in c.routes.iter().enumerate() {
        let at = |key, value, problem: Problem| {
            Invalid::new(
                Section::Route {
                    index,
                    name: Some(r.name.clone()),
                },
                key,
                value,
                problem,
            )
        };
        if let Some(&first) = names.get(r.name.as_str()) {
            return Err(Invalid::new(
                Section::Route { index, name: None },
                Some("name"),
                Some(quoted(&r.name)),
                Problem::DuplicateRoute {
                    first,
                    first_line: None,
                },
            ));
        }
        names.insert(&r.name, index);
        if index >= MAX_ROUTES as usize {
            return Err(at(
                None,
                None,
                Problem::TooManyRoutes {
                    count: c.routes.len(),
                },
            ));
        }
        r.to_kernel()
            .map_err(|e| route_invalid(index, &r.name, e))?;
        if c.http.ports.is_empty() {
            return Err(at(None, None, Problem::RoutesNeedHttpPorts));
        }
        if let Some(p) = r.port
            && !c.http.ports.contains(&p)
        {
            return Err(at(
                Some("port"),
                Some(p.to_string()),
                Problem::RoutePortNotHttp { ports: ports() },
            ));
        }
        for port in r.ports(&c.http.ports) {
            if let Some(&first) = keys.get(&(port, r.host.as_deref(), r.line.as_deref())) {
                let (key, value) = match (&r.line, r.port) {
                    (Some(_), _) => ("match", quoted(r.match_label())),
                    (None, _) => ("port", port.to_string()),
                };
                return Err(at(
                    Some(key),
                    Some(value),
                    Problem::DuplicateRouteMatch {
                        other: c.routes[first].name.clone(),
                        port,
                        first,
                        first_line: None,
                    },
                ));
            }
            keys.insert((port, r.host.as_deref(), r.line.as_deref()), index);
        }
        if r.mode == TierMode::Enforce {
            for t in &c.tiers {
                let Some(burst) = t
                    .limit(LimitField::Requests)
                    .and_then(|l| l.resolve(LimitField::Requests).ok())
                    .map(|l| l.burst)
                else {
                    continue;
                };
                if u64::from(r.cost) > burst {
                    return Err(at(
                        Some("cost"),
                        Some(r.cost.to_string()),
                        Problem::CostOverBurst {
                            tier: t.name.clone(),
                            burst,
                            cost: r.cost,
                        },
                    ));
                }
            }
        }
    }
    Ok(())
}

impl Config {
    /// Checks the configuration (see [`validate`]).
    pub fn validate(&self) -> Result<(), Invalid> {
        validate(self)
    }

    /// This configuration with `patch` applied to its tier (created when it
    /// is new), validated as a whole; and the tier as it is now.
    pub fn with_tier(&self, patch: &TierPatch) -> Result<(Config, TierSpec), Invalid> {
        let name = patch.tier_name();
        let existing = self.tiers.iter().position(|t| t.name == name);
        let index = existing.unwrap_or(self.tiers.len());
        let spec = patch
            .apply(existing.map(|i| &self.tiers[i]))
            .map_err(|e| tier_invalid(index, name, e))?;
        let mut c = self.clone();
        match existing {
            Some(i) => c.tiers[i] = spec.clone(),
            None => c.tiers.push(spec.clone()),
        }
        validate(&c)?;
        Ok((c, spec))
    }

    /// This configuration with the route `input` added (or replacing the
    /// route of the same name), validated as a whole; and the route.
    pub fn with_route(&self, input: &RouteInput) -> Result<(Config, RouteSpec), Invalid> {
        let name = input.route_name();
        let existing = self.routes.iter().position(|r| r.name == name);
        let index = existing.unwrap_or(self.routes.len());
        let spec = input.to_spec().map_err(|e| route_invalid(index, name, e))?;
        let mut c = self.clone();
        match existing {
            Some(i) => c.routes[i] = spec.clone(),
            None => c.routes.push(spec.clone()),
        }
        validate(&c)?;
        Ok((c, spec))
    }

    /// This configuration with the rule `input` added (or replacing the rule
    /// of the same CIDR), validated as a whole; and the rule.
    pub fn with_rule(&self, input: &RuleInput) -> Result<(Config, RuleSpec), Invalid> {
        let probe = rule_from_input(self.rules.len(), input)?;
        let existing = self.rules.iter().position(|r| r.cidr == probe.cidr);
        let rule = match existing {
            Some(i) => rule_from_input(i, input)?,
            None => probe,
        };
        let mut c = self.clone();
        match existing {
            Some(i) => c.rules[i] = rule.clone(),
            None => c.rules.push(rule.clone()),
        }
        validate(&c)?;
        Ok((c, rule))
    }
}
