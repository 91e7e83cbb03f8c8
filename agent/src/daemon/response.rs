//! The automated response as the daemon runs it: refusals from the kernel's
//! samples go into the engine (`response::Engine`) as they are read; once a
//! second the engine is asked which sources a `[[response]]` rule bans, the
//! host's TCP stack confirms request evidence, and the bans are issued (or,
//! for a shadow rule, logged and counted).

use std::{collections::HashMap, net::IpAddr, time::Instant};

use ipnet::IpNet;
use rand::Rng as _;
use tollgate_common::Verdict;
use tracing::{debug, info, warn};

use super::{Daemon, Shared, bans::unix_now, shared::lock};
use crate::{
    config::Effective,
    datapath::samples::Sample,
    response::{Confirmations, Engine, Judging, ban_length, established, offence_number},
    spec::{Ban, Evidence, ResponseMode},
};

/// The engine and what the TCP stack showed, behind one lock (taken after
/// the daemon's or the monitor's, never before).
pub(crate) struct ResponseState {
    engine: Engine,
    confirmations: Confirmations,
    started: Instant,
    /// The second of the last read of the TCP stack.
    read_at: Option<u64>,
    /// Sources a shadow rule would have banned, and until when (unix), and
    /// sources whose request evidence the TCP stack did not confirm (for a
    /// window): they are not judged again meanwhile, so what the engine did
    /// not do is logged and counted once, not every second.
    shadowed: HashMap<IpNet, f64>,
}

impl Default for ResponseState {
    fn default() -> Self {
        ResponseState {
            engine: Engine::default(),
            confirmations: Confirmations::default(),
            started: Instant::now(),
            read_at: None,
            shadowed: HashMap::new(),
        }
    }
}

impl ResponseState {
    /// Whole seconds since the daemon started: the engine's clock.
    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// A refusal one sample shows.
pub(super) struct Refusal {
    source: IpAddr,
    tier: u32,
    evidence: Evidence,
    weight: u64,
}

/// The evidence a sample is, if any. Request refusals come from the HTTP
/// samples (whose budget is larger), or from the verdict samples when HTTP
/// sampling is off, never both (a refused request segment may be in both).
/// Denied packets (a ban's, a deny rule's) are never evidence.
pub(super) fn refusal(s: &Sample, http_sampled: bool) -> Option<Refusal> {
    let evidence = match s.verdict() {
        Verdict::DroppedRequests if s.is_http() || !http_sampled => Evidence::Requests,
        Verdict::DroppedPackets | Verdict::DroppedBytes | Verdict::DroppedConnections
            if !s.is_http() =>
        {
            Evidence::Packets
        }
        _ => return None,
    };
    Some(Refusal {
        source: s.source(),
        tier: s.header.tier,
        evidence,
        weight: u64::from(s.header.scale.max(1)),
    })
}

/// What judging reads of the daemon.
struct DaemonView<'a> {
    daemon: &'a Daemon,
    in_force: &'a Effective,
    shadowed: &'a HashMap<IpNet, f64>,
}

impl Judging for DaemonView<'_> {
    fn tier_name(&self, tier: u32) -> Option<String> {
        self.in_force
            .names
            .is_used(tier)
            .then(|| self.in_force.names.name(tier))
    }
    fn allow_listed(&self, net: &IpNet) -> bool {
        self.daemon.allow_rule(net).is_some()
    }
    fn banned(&self, net: &IpNet) -> bool {
        self.daemon.state.bans.bans.contains_key(net) || self.shadowed.contains_key(net)
    }
}

impl Shared {
    /// Feeds a batch's refusals to the engine (nothing without `[[response]]`).
    pub(super) fn observe_refusals(&self, refusals: &[Refusal], in_force: &Effective) {
        if refusals.is_empty() || in_force.config.responses.is_empty() {
            return;
        }
        let mut r = lock(&self.response);
        let at = r.second();
        for f in refusals {
            let prefix = match f.source {
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => in_force
                    .names
                    .names
                    .get(f.tier as usize)
                    .and_then(|n| n.as_ref())
                    .map_or(64, |(_, p)| *p),
            };
            let Ok(net) = IpNet::new(f.source, prefix) else {
                continue;
            };
            r.engine
                .observe(net.trunc(), f.tier, f.evidence, f.weight, at);
        }
    }

    /// Once a second: lifts ended bans, asks the engine, confirms request
    /// evidence with the TCP stack, and bans.
    pub(super) fn respond(&self) {
        let in_force = self.config.borrow().clone();
        let rules = &in_force.config.responses;
        let (at, read) = {
            let r = lock(&self.response);
            let at = r.second();
            let wants = rules.iter().any(|r| r.evidence == Evidence::Requests)
                && r.read_at != Some(at)
                // The tick may come early in a second: the last one counts too.
                && r.engine.requests_refused_since(at.saturating_sub(1));
            (at, wants)
        };
        // Ask the TCP stack while the evidence is fresh: a client that opens a
        // connection per request leaves TIME_WAIT sockets for a minute.
        if read {
            match established::peers(&in_force.config.http.ports) {
                Ok(peers) => {
                    debug!(
                        peers = peers.len(),
                        "read the TCP stack's connections to the HTTP ports"
                    );
                    let mut r = lock(&self.response);
                    r.confirmations.record(peers, at);
                    r.read_at = Some(at);
                }
                Err(e) => {
                    warn!(error = %e, "reading the TCP stack's connections (request evidence cannot be confirmed)")
                }
            }
        }
        let mut d = lock(&self.daemon);
        d.expire_bans();
        if rules.is_empty() {
            return;
        }
        let mut r = lock(&self.response);
        let now = unix_now();
        r.shadowed.retain(|_, until| *until > now);
        let findings = {
            let r = &mut *r;
            let view = DaemonView {
                daemon: &d,
                in_force: &in_force,
                shadowed: &r.shadowed,
            };
            r.engine.judge(at, rules, &view)
        };
        let longest = rules.iter().map(|r| r.window.as_secs()).max().unwrap_or(0);
        r.confirmations.forget_before(at.saturating_sub(longest));
        let mut rng = rand::thread_rng();
        let mut unconfirmed = Vec::new();
        for f in findings {
            let rule = &rules[f.rule];
            let tier = in_force.names.name(f.tier);
            if rule.evidence == Evidence::Requests
                && !r.confirmations.confirms(&f.net, at, rule.window)
            {
                d.ban_counters.unconfirmed += 1;
                debug!(source = %f.net, rule = %rule.name, tier = %tier, refused_seconds = f.refused_seconds,
                    "not banned: its refused requests come with no TCP connection to an HTTP port");
                // Not judged again for a window: a forged source is logged
                // once per window, not every second.
                r.shadowed.insert(f.net, now + rule.window.as_secs_f64());
                unconfirmed.push(f.net);
                continue;
            }
            let offence = offence_number(&d.state.bans, &f.net, rule, now);
            let length = ban_length(rule, offence, rng.gen_range(-1.0..=1.0));
            let reason = format!(
                "refused {} {} in {} of the last {} s",
                f.refused,
                rule.evidence.name(),
                f.refused_seconds,
                rule.window.as_secs()
            );
            if rule.mode == ResponseMode::Shadow {
                r.shadowed.insert(f.net, now + length.as_secs_f64());
                *d.ban_counters
                    .would_ban
                    .entry(rule.name.clone())
                    .or_default() += 1;
                info!(source = %f.net, rule = %rule.name, tier = %tier, offence,
                    duration_secs = format!("{:.1}", length.as_secs_f64()), reason = %reason,
                    "shadow: would ban {} for {:.1} s (offence {offence})", f.net, length.as_secs_f64());
                continue;
            }
            let ban = Ban {
                rule: rule.name.clone(),
                reason,
                since: now,
                until: now + length.as_secs_f64(),
                offence,
            };
            if let Err(e) = d.ban(f.net, ban) {
                warn!(source = %f.net, rule = %rule.name, error = %e, "banning failed");
            } else {
                debug!(source = %f.net, tier = %tier, "ban issued by the response engine");
            }
        }
        // One line a second for all of them, however many forged sources a
        // flood carries.
        if !unconfirmed.is_empty() {
            let examples: Vec<String> = unconfirmed.iter().take(3).map(|n| n.to_string()).collect();
            info!(sources = unconfirmed.len(), examples = %examples.join(","),
                "not banned: {} source(s) whose refused requests came with no TCP connection to an HTTP port (forged?), e.g. {}",
                unconfirmed.len(), examples.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use tollgate_common::{SAMPLE_HTTP, SAMPLE_VERDICT, SampleHeader};

    use super::*;

    fn sample(kind: u8, verdict: Verdict) -> SampleHeader {
        SampleHeader {
            kind,
            family: 4,
            src: [192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            verdict: verdict as u8,
            scale: 64,
            ..Default::default()
        }
    }

    fn evidence(kind: u8, verdict: Verdict, http_sampled: bool) -> Option<Evidence> {
        let header = sample(kind, verdict);
        refusal(
            &Sample {
                header,
                payload: &[],
            },
            http_sampled,
        )
        .map(|r| r.evidence)
    }

    #[test]
    fn only_refusals_are_evidence_and_a_ban_never_feeds_itself() {
        use Verdict::*;
        // A ban's (or a deny rule's) drops, passes and shadow would-drops:
        // never evidence.
        for v in [
            Denied,
            Passed,
            Allowed,
            ShadowWouldDrop,
            DroppedAggregate,
            DroppedRouteCeiling,
        ] {
            for kind in [SAMPLE_HTTP, SAMPLE_VERDICT] {
                assert_eq!(evidence(kind, v, true), None, "{v:?}");
                assert_eq!(evidence(kind, v, false), None, "{v:?}");
            }
        }
        // Refused requests: from the HTTP samples, or from the verdict
        // samples only while HTTP sampling is off (never both).
        assert_eq!(
            evidence(SAMPLE_HTTP, DroppedRequests, true),
            Some(Evidence::Requests)
        );
        assert_eq!(evidence(SAMPLE_VERDICT, DroppedRequests, true), None);
        assert_eq!(
            evidence(SAMPLE_VERDICT, DroppedRequests, false),
            Some(Evidence::Requests)
        );
        // Packet refusals, from the verdict samples.
        for v in [DroppedPackets, DroppedBytes, DroppedConnections] {
            assert_eq!(evidence(SAMPLE_VERDICT, v, true), Some(Evidence::Packets));
            assert_eq!(evidence(SAMPLE_HTTP, v, true), None);
        }
        let header = sample(SAMPLE_VERDICT, DroppedPackets);
        let r = refusal(
            &Sample {
                header,
                payload: &[],
            },
            true,
        )
        .unwrap();
        assert_eq!(r.weight, 64);
        assert_eq!(r.source, "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
