//! `[[response]]`, `[crowdsec]` and a tier's `adaptive` table: what each
//! reads as, and errors that name the file, line, field and value.

use std::time::Duration;

use super::*;

#[test]
fn adaptive_tables_parse_and_their_errors_name_file_line_and_key() {
    let c = parse_str(
        "[[tier]]\nname = \"web\"\npackets = \"1000/s\"\n\
         adaptive = { signal = \"cgroup:/sys/fs/cgroup/system.slice/nginx.service/cpu.pressure\", threshold = 40, min = 0.2, mode = \"shadow\" }\n",
    )
    .unwrap();
    let a = c.tiers[0].adaptive.as_ref().unwrap().check().unwrap();
    assert_eq!(a.law.min, 0.2);
    assert_eq!(a.mode, crate::spec::TierMode::Shadow);
    assert_err(
        "[[tier]]\nname = \"web\"\npackets = \"1000/s\"\nadaptive = { signal = \"cpu\", threshold = 40, min = 2 }\n",
        &["tollgate.toml:4: tier \"web\": adaptive: min = 2: must be between 0.01 and 1"],
    );
    assert_err(
        "[[tier]]\nname = \"web\"\n\nadaptive = { signal = \"load\", threshold = 40 }\n",
        &["tollgate.toml:4: tier \"web\": adaptive: signal = \"load\": use \"cpu\""],
    );
    assert_err(
        "[[tier]]\nname = \"web\"\nadaptive = { signal = \"cpu\", treshold = 40 }\n",
        &["tollgate.toml:3", "treshold"],
    );
}

const RESPONSE_BASE: &str =
    "[[tier]]\nname = \"free\"\nrequests = \"10/s\"\n[http]\nports = [80]\n";

#[test]
fn response_rules_read_with_their_defaults() {
    let c = parse(
        &format!(
            "{RESPONSE_BASE}[[response]]\nname = \"scrapers\"\nrefused_seconds = 5\nwindow = \"30s\"\n\
             ban = \"10m\"\nignore = [\"10.0.0.0/8\"]\ntiers = [\"free\"]\nmode = \"shadow\"\n\
             [[response]]\nname = \"floods\"\nrefused_over = 1000\nevidence = \"packets\"\n"
        ),
        ConfigSource::Embedded,
    )
    .unwrap();
    let r = &c.responses[0];
    assert_eq!(r.refused_seconds, Some(5));
    assert_eq!(r.window, std::time::Duration::from_secs(30));
    assert_eq!(r.ban, std::time::Duration::from_secs(600));
    assert_eq!(r.max_ban, std::time::Duration::from_secs(86_400));
    assert_eq!(
        r.ignore,
        vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(r.mode, crate::spec::ResponseMode::Shadow);
    assert_eq!(r.evidence, crate::spec::Evidence::Requests);
    let f = &c.responses[1];
    assert_eq!((f.refused_seconds, f.refused_over), (None, Some(1000)));
    assert_eq!(f.window, std::time::Duration::from_secs(60));
    assert_eq!(f.evidence, crate::spec::Evidence::Packets);
}

#[test]
fn response_errors_name_file_line_field_and_value() {
    let at = |body: &str, want: &str| {
        assert_err(
            &format!("{RESPONSE_BASE}[[response]]\nname = \"r\"\n{body}"),
            &[want],
        );
    };
    // The [[response]] table starts on line 6; its name is on line 7.
    at(
        "window = \"30s\"\n",
        "tollgate.toml:7: response \"r\": set refused_seconds",
    );
    at(
        "refused_seconds = 5\nwindow = \"3s\"\n",
        "tollgate.toml:9: response \"r\": window = \"3s\": must be at least 5 (refused_seconds)",
    );
    at(
        "refused_seconds = 5\nban = \"10x\"\n",
        "tollgate.toml:9: response \"r\": ban = \"10x\": missing unit",
    );
    at(
        "refused_seconds = 5\nban = \"1h\"\nmax_ban = \"10m\"\n",
        "tollgate.toml:10: response \"r\": max_ban = \"10m 0s\": must be at least ban (1h 0m)",
    );
    at(
        "refused_seconds = 5\nignore = [\"10.0.0.0/8\", \"10.0.0.300/8\"]\n",
        "tollgate.toml:9: response \"r\": ignore: \"10.0.0.300/8\": not a valid CIDR",
    );
    at(
        "refused_seconds = 5\ntiers = [\"gold\"]\n",
        "tollgate.toml:9: response \"r\": tiers: \"gold\": no such tier (tiers: free)",
    );
    at(
        "refused_seconds = 0\n",
        "tollgate.toml:8: response \"r\": refused_seconds = 0: must be between 1 and 3600",
    );
    assert_err(
        "[[tier]]\nname = \"free\"\npackets = \"10/s\"\n[http]\nports = []\n[[response]]\nname = \"r\"\nrefused_seconds = 2\n",
        &[
            "tollgate.toml:6: response \"r\": evidence = \"requests\": request evidence comes from the [http] ports",
        ],
    );
    assert_err(
        &format!(
            "{RESPONSE_BASE}[[response]]\nname = \"r\"\nrefused_seconds = 2\n[[response]]\nname = \"r\"\nrefused_seconds = 3\n"
        ),
        &[
            "tollgate.toml:10: response: name = \"r\": a response rule with this name is already defined",
        ],
    );
}

#[test]
fn crowdsec_section_defaults_and_values() {
    use crate::config::{DEFAULT_POLL_INTERVAL, DecisionScope};
    let c = parse_str(
        "[crowdsec]\nlapi_url = \"http://127.0.0.1:8080\"\napi_key_file = \"/etc/tollgate/crowdsec.key\"\n",
    )
    .unwrap()
    .crowdsec
    .unwrap();
    assert_eq!(c.lapi_url, "http://127.0.0.1:8080/");
    assert_eq!(c.poll_interval, DEFAULT_POLL_INTERVAL);
    assert_eq!(c.scopes, vec![DecisionScope::Ip, DecisionScope::Range]);
    let c = parse_str(
        "[crowdsec]\nlapi_url = \"http://lapi:8080/\"\napi_key_file = \"/k\"\npoll_interval = \"1s\"\nscopes = [\"ip\"]\n",
    )
    .unwrap()
    .crowdsec
    .unwrap();
    assert_eq!(c.poll_interval, Duration::from_secs(1));
    assert_eq!(c.scopes, vec![DecisionScope::Ip]);
    assert!(parse_str(GOOD).unwrap().crowdsec.is_none());
}

#[test]
fn crowdsec_errors_name_file_line_field_and_value() {
    assert_err(
        "[crowdsec]\nlapi_url = \"https://127.0.0.1:8080/\"\napi_key_file = \"/k\"\n",
        &[
            "tollgate.toml:2: crowdsec: lapi_url = \"https://127.0.0.1:8080/\": not a local API URL (https is not supported",
        ],
    );
    assert_err(
        "[crowdsec]\nlapi_url = \"http://h/\"\napi_key_file = \"key\"\n",
        &["tollgate.toml:3: crowdsec: api_key_file = \"key\": must be an absolute path"],
    );
    assert_err(
        "[crowdsec]\nlapi_url = \"http://h/\"\napi_key_file = \"/k\"\npoll_interval = \"3600s\"\n",
        &["tollgate.toml:4: crowdsec: poll_interval = \"3600s\": must be between 200ms and 600s"],
    );
    assert_err(
        "[crowdsec]\nlapi_url = \"http://h/\"\napi_key_file = \"/k\"\nscopes = [\"Ip\", \"Country\"]\n",
        &["tollgate.toml:4: crowdsec: scopes: \"Country\": not a decision scope tollgate enforces"],
    );
    assert_err(
        "[crowdsec]\nlapi_url = \"http://h/\"\n",
        &["missing field `api_key_file`"],
    );
}
