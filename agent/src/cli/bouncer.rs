//! How the CLI words the CrowdSec bouncer's state.

/// `status`'s CrowdSec line.
pub(super) fn status_line(c: &crate::proto::CrowdsecStatus) -> String {
    let ago = c
        .last_sync_secs_ago
        .map_or("never".to_owned(), |s| format!("{s:.0} s ago"));
    let allow = if c.allow_listed > 0 {
        format!(" ({} allow-listed, not denied)", c.allow_listed)
    } else {
        String::new()
    };
    if c.up {
        format!(
            "up: {}, every {} ms, last pull {ago}; {} prefix{} banned{allow}",
            c.lapi_url,
            c.poll_interval_ms,
            c.banned_prefixes,
            if c.banned_prefixes == 1 { "" } else { "es" },
        )
    } else {
        format!(
            "DOWN: {} ({}); last pull {ago}, enforcing its {} ban{}{allow}",
            c.lapi_url,
            c.last_error.as_deref().unwrap_or("not pulled yet"),
            c.banned_prefixes,
            if c.banned_prefixes == 1 { "" } else { "s" },
        )
    }
}
