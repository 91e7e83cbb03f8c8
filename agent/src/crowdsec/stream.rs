//! The local API's decisions stream (`GET /v1/decisions/stream`) as serde
//! types, and its decisions as tollgate enforces them.
//!
//! The answer is `{"new": [...] | null, "deleted": [...] | null}`; a decision
//! is `{"id", "origin", "scenario", "scope", "type", "value", "duration"}`,
//! its duration a Go duration (`"3h59m58.2s"`, negative once expired).

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::DecisionScope;

/// One answer of the stream.
#[derive(Debug, Default, Deserialize)]
pub struct StreamAnswer {
    #[serde(default)]
    pub new: Option<Vec<RawDecision>>,
    #[serde(default)]
    pub deleted: Option<Vec<RawDecision>>,
}

/// A decision as the local API writes it.
#[derive(Clone, Debug, Deserialize)]
pub struct RawDecision {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub scenario: Option<String>,
    pub scope: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// A ban decision tollgate applies: the prefix it denies, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The local API's id (deletions name it).
    pub id: i64,
    pub net: IpNet,
    pub scope: DecisionScope,
    /// `cscli`, `crowdsec`, `CAPI`, `lists`, ...
    pub origin: String,
    pub scenario: String,
    /// When the ban ends, on the kernel's clock (`CLOCK_MONOTONIC` ns).
    pub expires_ns: u64,
}

/// Why a decision is not applied (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ignored {
    /// Not a `ban` (e.g. `captcha`): nothing to enforce at XDP.
    Type,
    /// A scope not in `[crowdsec] scopes` (e.g. `Country`, `AS`).
    Scope,
    /// A value that is not an address or prefix of its scope, or no duration.
    Value,
}

impl Ignored {
    pub fn label(self) -> &'static str {
        match self {
            Ignored::Type => "type",
            Ignored::Scope => "scope",
            Ignored::Value => "value",
        }
    }
}

impl RawDecision {
    /// The decision as enforced, given the kernel clock now: a `ban` of a
    /// configured scope with a parsable value and duration.
    pub fn to_decision(&self, scopes: &[DecisionScope], now_ns: u64) -> Result<Decision, Ignored> {
        let scope = DecisionScope::parse(&self.scope)
            .filter(|s| scopes.contains(s))
            .ok_or(Ignored::Scope)?;
        if !self.kind.eq_ignore_ascii_case("ban") {
            return Err(Ignored::Type);
        }
        let net = parse_value(scope, &self.value).ok_or(Ignored::Value)?;
        let left = self
            .duration
            .as_deref()
            .and_then(parse_go_duration)
            .ok_or(Ignored::Value)?;
        let expires_ns = match left {
            Left::Remaining(d) => now_ns.saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
            Left::Expired => now_ns,
        };
        Ok(Decision {
            id: self.id.unwrap_or(-1),
            net,
            scope,
            origin: self.origin.clone().unwrap_or_default(),
            scenario: self.scenario.clone().unwrap_or_default(),
            expires_ns,
        })
    }

    /// The prefix a deletion names (any scope, type or duration).
    pub fn net(&self) -> Option<IpNet> {
        DecisionScope::parse(&self.scope).and_then(|s| parse_value(s, &self.value))
    }
}

fn parse_value(scope: DecisionScope, value: &str) -> Option<IpNet> {
    let value = value.trim();
    let net = match scope {
        DecisionScope::Ip => match value.parse::<IpAddr>() {
            Ok(a) => IpNet::from(a),
            // An Ip decision written with its host prefix.
            Err(_) => value
                .parse::<IpNet>()
                .ok()
                .filter(|n| n.prefix_len() == n.max_prefix_len())?,
        },
        DecisionScope::Range => value.parse::<IpNet>().ok()?,
    };
    Some(net.trunc())
}

/// A decision's duration: time left, or none (expired).
#[derive(Debug, PartialEq, Eq)]
pub enum Left {
    Remaining(Duration),
    Expired,
}

/// Parses a Go `time.Duration` string (`"1h2m3.5s"`, `"250ms"`, `"-3s"`).
pub fn parse_go_duration(s: &str) -> Option<Left> {
    let s = s.trim();
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(Left::Expired);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let number: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_end..];
    }
    if negative || total <= 0.0 {
        return Some(Left::Expired);
    }
    Duration::try_from_secs_f64(total).ok().map(Left::Remaining)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_the_api_writes_them() {
        let secs = |s: f64| Some(Left::Remaining(Duration::from_secs_f64(s)));
        assert_eq!(parse_go_duration("58.528521576s"), secs(58.528521576));
        assert_eq!(parse_go_duration("1m59.5s"), secs(119.5));
        assert_eq!(
            parse_go_duration("167h59m59s"),
            secs(167.0 * 3600.0 + 3599.0)
        );
        assert_eq!(parse_go_duration("250ms"), secs(0.25));
        assert_eq!(parse_go_duration("-25.915983ms"), Some(Left::Expired));
        assert_eq!(parse_go_duration("0"), Some(Left::Expired));
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("h"), None);
    }

    const ANSWER: &str = r#"{"deleted":null,"new":[
        {"duration":"58.5s","id":1,"origin":"cscli","scenario":"manual 'ban' from 'tg'","scope":"Ip","type":"ban","value":"10.9.0.2"},
        {"duration":"1m59.5s","id":2,"origin":"cscli","scenario":"manual","scope":"Range","type":"ban","value":"10.8.0.0/24"},
        {"duration":"4h","id":3,"origin":"CAPI","scenario":"ssh-bf","scope":"Ip","type":"captcha","value":"10.9.0.3"},
        {"duration":"4h","id":4,"origin":"crowdsec","scenario":"x","scope":"Country","type":"ban","value":"FR"},
        {"duration":"4h","id":5,"origin":"crowdsec","scenario":"x","scope":"Ip","type":"ban","value":"not-an-ip"},
        {"duration":"4h","id":6,"origin":"lists","scenario":"x","scope":"Ip","type":"ban","value":"2001:db8::1"}]}"#;

    #[test]
    fn bans_of_configured_scopes_become_denies_and_the_rest_are_ignored_with_a_reason() {
        let a: StreamAnswer = serde_json::from_str(ANSWER).unwrap();
        assert!(a.deleted.is_none());
        let scopes = [DecisionScope::Ip, DecisionScope::Range];
        let now = 1_000_000_000;
        let got: Vec<_> = a
            .new
            .unwrap()
            .iter()
            .map(|d| d.to_decision(&scopes, now))
            .collect();
        let ok = got[0].as_ref().unwrap();
        assert_eq!(ok.net, "10.9.0.2/32".parse::<IpNet>().unwrap());
        assert_eq!(
            (ok.id, ok.scope, ok.origin.as_str()),
            (1, DecisionScope::Ip, "cscli")
        );
        assert_eq!(ok.expires_ns, now + 58_500_000_000);
        let range = got[1].as_ref().unwrap();
        assert_eq!(range.net, "10.8.0.0/24".parse::<IpNet>().unwrap());
        assert_eq!(range.scope, DecisionScope::Range);
        assert_eq!(got[2], Err(Ignored::Type));
        assert_eq!(got[3], Err(Ignored::Scope));
        assert_eq!(got[4], Err(Ignored::Value));
        assert_eq!(
            got[5].as_ref().unwrap().net,
            "2001:db8::1/128".parse::<IpNet>().unwrap()
        );
        // Only Ip configured: the range is ignored by scope.
        let a: StreamAnswer = serde_json::from_str(ANSWER).unwrap();
        assert_eq!(
            a.new.unwrap()[1].to_decision(&[DecisionScope::Ip], now),
            Err(Ignored::Scope)
        );
    }

    #[test]
    fn an_empty_answer_is_two_nulls() {
        let a: StreamAnswer = serde_json::from_str(r#"{"new":null,"deleted":null}"#).unwrap();
        assert!(a.new.is_none() && a.deleted.is_none());
    }
}
