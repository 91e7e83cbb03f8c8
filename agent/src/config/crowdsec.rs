//! `[crowdsec]`: tollgate as a CrowdSec bouncer. The section as the file
//! writes it, and its rules (the one place they are checked).

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::error::{Invalid, Problem, Section};
use crate::{spec::quoted, units};

/// How often the decisions stream is polled unless `poll_interval` says
/// otherwise (CrowdSec's own bouncers default to 10 s).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Range of `poll_interval`.
pub(super) const MIN_POLL_INTERVAL: Duration = Duration::from_millis(200);
pub(super) const MAX_POLL_INTERVAL: Duration = Duration::from_secs(600);

/// A decision scope tollgate can enforce as a kernel deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DecisionScope {
    /// `Ip`: one address (a /32 or /128 deny).
    Ip,
    /// `Range`: a CIDR prefix.
    Range,
}

impl DecisionScope {
    /// The scope as the local API writes it.
    pub fn name(self) -> &'static str {
        match self {
            DecisionScope::Ip => "Ip",
            DecisionScope::Range => "Range",
        }
    }

    /// Parses a scope case-insensitively (the API writes `Ip`, `Range`;
    /// `cscli` accepts `ip`, `range`).
    pub fn parse(s: &str) -> Option<DecisionScope> {
        match s.to_ascii_lowercase().as_str() {
            "ip" => Some(DecisionScope::Ip),
            "range" => Some(DecisionScope::Range),
            _ => None,
        }
    }
}

/// `[crowdsec]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrowdsecConfig {
    /// The local API's base URL (`http://host:port/`, ending in `/`).
    pub lapi_url: String,
    /// The file holding the bouncer's API key (`cscli bouncers add`): the key
    /// is never in the configuration and never logged.
    pub api_key_file: PathBuf,
    /// How often the stream is asked for changes.
    pub poll_interval: Duration,
    /// The scopes whose ban decisions are applied (others are counted and
    /// ignored).
    pub scopes: Vec<DecisionScope>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCrowdsec {
    lapi_url: String,
    api_key_file: PathBuf,
    poll_interval: Option<String>,
    scopes: Option<Vec<String>>,
}

pub(super) fn lower_crowdsec(c: RawCrowdsec) -> Result<CrowdsecConfig, Invalid> {
    let err =
        |key, value: String, p: Problem| Invalid::new(Section::Crowdsec, Some(key), Some(value), p);
    let lapi_url = check_lapi_url(&c.lapi_url)
        .map_err(|why| err("lapi_url", quoted(&c.lapi_url), Problem::LapiUrl(why)))?;
    if !c.api_key_file.is_absolute() {
        return Err(err(
            "api_key_file",
            quoted(&c.api_key_file.display().to_string()),
            Problem::NotAbsolute,
        ));
    }
    let poll_interval = match c.poll_interval {
        None => DEFAULT_POLL_INTERVAL,
        Some(s) => {
            let d = units::parse_duration(&s)
                .map_err(|e| err("poll_interval", quoted(&s), e.into()))?;
            if !(MIN_POLL_INTERVAL..=MAX_POLL_INTERVAL).contains(&d) {
                return Err(err("poll_interval", quoted(&s), Problem::PollInterval));
            }
            d
        }
    };
    let scopes = match c.scopes {
        None => vec![DecisionScope::Ip, DecisionScope::Range],
        Some(list) => {
            let mut scopes = Vec::new();
            for (i, s) in list.iter().enumerate() {
                let Some(scope) = DecisionScope::parse(s) else {
                    return Err(err("scopes", quoted(s), Problem::DecisionScope).item(i));
                };
                if scopes.contains(&scope) {
                    return Err(err("scopes", quoted(s), Problem::ListedTwice).item(i));
                }
                scopes.push(scope);
            }
            if scopes.is_empty() {
                return Err(err("scopes", "[]".to_owned(), Problem::DecisionScope));
            }
            scopes
        }
    };
    Ok(CrowdsecConfig {
        lapi_url,
        api_key_file: c.api_key_file,
        poll_interval,
        scopes,
    })
}

/// `http://host:port/path/` with a host and no query: what the client can
/// reach (plain HTTP: the local API listens on loopback or a private
/// network). Returns the URL with a trailing `/`.
fn check_lapi_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err("https is not supported: point it at the local API over http (it listens on 127.0.0.1:8080 by default)".to_owned());
        }
        _ => return Err("not an http:// URL".to_owned()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host".to_owned());
    }
    if uri.query().is_some() {
        return Err("a base URL has no query".to_owned());
    }
    Ok(if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapi_urls_need_http_and_a_host_and_get_a_trailing_slash() {
        assert_eq!(
            check_lapi_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(
            check_lapi_url("http://lapi.internal:8080/crowdsec/").unwrap(),
            "http://lapi.internal:8080/crowdsec/"
        );
        assert!(
            check_lapi_url("https://127.0.0.1:8080/")
                .unwrap_err()
                .contains("https")
        );
        assert!(check_lapi_url("127.0.0.1:8080").is_err());
        assert!(check_lapi_url("http://127.0.0.1:8080/?a=b").is_err());
    }

    #[test]
    fn scopes_parse_as_the_api_and_cscli_write_them() {
        assert_eq!(DecisionScope::parse("Ip"), Some(DecisionScope::Ip));
        assert_eq!(DecisionScope::parse("range"), Some(DecisionScope::Range));
        assert_eq!(DecisionScope::parse("Country"), None);
    }
}
