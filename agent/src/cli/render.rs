//! Rendering the daemon's answers as aligned tables with human units.

use tollgate_common::Verdict;

use crate::{
    proto::{
        self, Fill, LimitRow, RouteRow, RuleRow, StatsData, StatusData, TierRow, TopBy, TopData,
    },
    units::{human_byte_rate, human_bytes, human_count, human_duration, human_rate},
};

/// A text table: columns padded to their widest cell, numbers right-aligned.
pub struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns whose header starts with '>' are right-aligned.
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            headers: headers.iter().map(|h| h.trim_start_matches('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(width(c));
            }
        }
        let mut out = String::new();
        let line = |cells: Vec<&str>, out: &mut String| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = widths[i].saturating_sub(width(c));
                if i > 0 {
                    l.push_str("  ");
                }
                if self.right[i] {
                    l.push_str(&" ".repeat(pad));
                    l.push_str(c);
                } else {
                    l.push_str(c);
                    l.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(self.headers.clone(), &mut out);
        for r in &self.rows {
            line(r.iter().map(String::as_str).collect(), &mut out);
        }
        out
    }
}

pub(super) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn fill_row(name: &str, f: &Fill) -> Vec<String> {
    let pct = if f.max > 0 {
        format!("{:.1}%", f.used as f64 * 100.0 / f.max as f64)
    } else {
        "-".to_owned()
    };
    vec![name.to_owned(), thousands(f.used), thousands(f.max), pct]
}

/// `status` with no daemon: what the pins still enforce.
pub fn render_offline_status(o: &proto::OfflineStatus) -> String {
    let live: Vec<&str> = o
        .links
        .iter()
        .filter(|l| l.attached)
        .map(|l| l.interface.as_str())
        .collect();
    let since = o.program_loaded_unix.map_or(String::new(), |t| {
        let ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |now| now.as_secs().saturating_sub(t));
        format!(" (loaded {} ago)", human_duration(ago))
    });
    let mut out = match (o.program_id, live.is_empty()) {
        (Some(id), false) => format!(
            "daemon not running; program {id}{since} still attached to {} and enforcing the last configuration",
            live.join(", ")
        ),
        (Some(id), true) => format!(
            "daemon not running; program {id}{since} is pinned in {} but attached to no interface: nothing is enforced",
            o.pin_dir.display()
        ),
        (None, _) => format!(
            "daemon not running; nothing attached (no program pinned in {})",
            o.pin_dir.display()
        ),
    };
    for l in o.links.iter().filter(|l| !l.attached) {
        out.push_str(&format!(
            "\n{}: pinned link no longer attached (the interface was deleted or re-created)",
            l.interface
        ));
    }
    out.push_str("\nstart it with `tollgate run` (it adopts the running program), or remove the program with `tollgate detach`");
    out
}

pub fn render_status(s: &StatusData) -> String {
    let start = match s.start.as_str() {
        "fresh" => "loaded a fresh program",
        "adopted" => "adopted the pinned program",
        "repaired" => "adopted the pinned maps, re-attached",
        "upgraded" => "upgraded the pinned program",
        other => other,
    };
    let mut out = format!(
        "tollgate {}: running for {} (pid {}; {start})\n",
        s.version,
        human_duration(s.uptime_secs),
        s.pid
    );
    let mut kv = Table::new(&["", ""]);
    kv.row(vec![
        "program".into(),
        match s.program_id {
            Some(id) => format!("id {id}, pinned in {}", s.pin_dir.display()),
            None => format!("not pinned (expected in {})", s.pin_dir.display()),
        },
    ]);
    kv.row(vec![
        "config".into(),
        if s.cli_changes > 0 {
            format!(
                "{} + {} change{} made with the CLI (saved in {})",
                s.config_source,
                s.cli_changes,
                if s.cli_changes == 1 { "" } else { "s" },
                s.state_file.display()
            )
        } else {
            s.config_source.clone()
        },
    ]);
    kv.row(vec!["default tier".into(), s.default_tier.clone()]);
    if s.bans > 0 {
        kv.row(vec![
            "bans".into(),
            format!("{} in force (tollgate ban list)", s.bans),
        ]);
    }
    kv.row(vec!["socket".into(), s.socket.display().to_string()]);
    if let Some(c) = &s.cluster {
        kv.row(vec![
            "cluster".into(),
            if c.up {
                format!(
                    "up: {} as {}, every {} ms; {} source{} denied fleet-wide",
                    c.redis,
                    c.node_id,
                    c.sync_interval_ms,
                    c.denied_sources,
                    if c.denied_sources == 1 { "" } else { "s" }
                )
            } else {
                format!(
                    "DOWN: {} ({}); global limits paused, local limits enforcing",
                    c.redis,
                    c.last_error.as_deref().unwrap_or("not synced yet")
                )
            },
        ]);
    }
    if let Some(c) = &s.crowdsec {
        kv.row(vec!["crowdsec".into(), super::bouncer::status_line(c)]);
    }
    // Skip the empty header line of the key/value table.
    out.push_str(kv.render().split_once('\n').map_or("", |(_, rest)| rest));
    out.push('\n');
    let mut ifs = Table::new(&["INTERFACE", "MODE", "ATTACHED", ">LINK", ">PROGRAM"]);
    for i in &s.interfaces {
        ifs.row(vec![
            i.name.clone(),
            i.mode
                .map_or("unknown".to_owned(), |m| format!("{m:?}").to_lowercase()),
            if i.attached { "yes" } else { "NO" }.to_owned(),
            i.link_id.map_or("-".into(), |v| v.to_string()),
            i.program_id.map_or("-".into(), |v| v.to_string()),
        ]);
    }
    out.push_str(&ifs.render());
    out.push('\n');
    let mut maps = Table::new(&["MAP", ">USED", ">MAX", ">FILL"]);
    maps.row(fill_row("sources v4", &s.sources_v4));
    maps.row(fill_row("sources v6", &s.sources_v6));
    maps.row(fill_row("rules v4", &s.rules_v4));
    maps.row(fill_row("rules v6", &s.rules_v6));
    maps.row(fill_row("tiers", &s.tiers));
    out.push_str(&maps.render());
    out.push_str(&super::adaptive::render_adaptive(&s.adaptive));
    out
}

fn limit_cell(l: &Option<LimitRow>, bytes: bool) -> String {
    match l {
        None => "-".to_owned(),
        Some(l) => {
            let burst = if bytes {
                human_bytes(l.burst as f64)
            } else {
                human_count(l.burst as f64)
            };
            format!("{} ({burst})", l.rate)
        }
    }
}

/// A tier's SOURCE cell: where it comes from, and which fields the CLI
/// sets when the rest comes from the file.
fn tier_source(r: &TierRow) -> String {
    let cli: Vec<&str> = r
        .fields
        .iter()
        .filter(|(_, s)| *s == "cli")
        .map(|(f, _)| f.as_str())
        .collect();
    let from_file = r.fields.values().any(|s| s == "file");
    if r.source == "cli" && from_file && !cli.is_empty() {
        format!("cli: {}", cli.join(","))
    } else {
        r.source.clone()
    }
}

pub fn render_tiers(rows: &[TierRow]) -> String {
    let mut t = Table::new(&[
        "TIER",
        ">IDX",
        "MODE",
        "PACKETS (BURST)",
        "BYTES (BURST)",
        "CONNECTIONS",
        "REQUESTS",
        "AGGREGATE",
        ">IPV6",
        ">RULES",
        "SOURCE",
        ">FACTOR",
    ]);
    for r in rows {
        t.row(vec![
            format!("{}{}", r.name, if r.default { "*" } else { "" }),
            r.index.to_string(),
            r.mode.name().to_owned(),
            limit_cell(&r.packets, false),
            limit_cell(&r.bytes, true),
            limit_cell(&r.connections, false),
            limit_cell(&r.requests, false),
            limit_cell(&r.aggregate, false),
            format!("/{}", r.ipv6_prefix),
            r.rules.to_string(),
            tier_source(r),
            super::adaptive::factor_cell(r),
        ]);
    }
    format!(
        "{}\n* default tier (sources no rule matches); \"-\": unlimited; bursts in parentheses\n\
         SOURCE \"cli: FIELDS\": those fields were set with the CLI and win over the file until `tollgate tier reset NAME`\n\
         FACTOR: an adaptive tier's limits in force are the ones shown x FACTOR (see `tollgate status`)",
        t.render()
    )
}

pub fn render_rules(rows: &[RuleRow]) -> String {
    if rows.is_empty() {
        return "no rules: every source is limited by the default tier".to_owned();
    }
    let mut t = Table::new(&["CIDR", "ACTION", "TIER", "SOURCE"]);
    for r in rows {
        let tier = if r.action == "tier" {
            r.tier.clone()
        } else {
            format!("({})", r.tier)
        };
        t.row(vec![
            r.cidr.clone(),
            r.action.clone(),
            tier,
            r.source.clone(),
        ]);
    }
    format!(
        "{}\nallow/deny traffic is counted under the tier in parentheses",
        t.render()
    )
}

pub fn render_routes(rows: &[RouteRow]) -> String {
    if rows.is_empty() {
        return "no routes: every request head costs 1 and no endpoint has a ceiling (add one with `tollgate route add NAME --match \"POST /api/search\" --cost 20`)".to_owned();
    }
    let mut t = Table::new(&[
        "ROUTE",
        ">IDX",
        "MATCH",
        "HOST",
        "PORTS",
        ">COST",
        "CEILING (BURST)",
        "MODE",
        ">REQUESTS",
        ">DROPPED",
        ">BY CEILING",
        ">SHADOW",
        "SOURCE",
    ]);
    for r in rows {
        t.row(vec![
            r.name.clone(),
            r.index.to_string(),
            r.matches.clone(),
            r.host.clone().unwrap_or_else(|| "*".to_owned()),
            r.ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
            r.cost.to_string(),
            limit_cell(&r.ceiling, false),
            r.mode.name().to_owned(),
            thousands(r.requests),
            thousands(r.dropped),
            thousands(r.dropped_ceiling),
            thousands(r.shadow_would_drop),
            r.source.clone(),
        ]);
    }
    format!(
        "{}
counts are requests since the program was loaded; DROPPED: in dropped segments, for any reason; \
         BY CEILING: refused by the route's ceiling; SHADOW: what a shadow route's ceiling would have refused",
        t.render()
    )
}

pub fn render_stats(s: &StatsData) -> String {
    let mut t = Table::new(&[
        "TIER",
        "VERDICT",
        ">PACKETS",
        ">BYTES",
        ">PACKETS/S",
        ">BYTES/S",
    ]);
    for tier in &s.tiers {
        let mut first = true;
        for v in Verdict::ALL {
            let verdict = v.name();
            let Some(c) = tier.verdicts.get(verdict) else {
                continue;
            };
            if c.packets == 0 && v != Verdict::Passed {
                continue;
            }
            t.row(vec![
                if first {
                    tier.name.clone()
                } else {
                    String::new()
                },
                verdict.to_owned(),
                human_count(c.packets as f64),
                human_bytes(c.bytes as f64),
                human_rate(c.packets_per_sec),
                human_byte_rate(c.bytes_per_sec),
            ]);
            first = false;
        }
        t.row(vec![
            String::new(),
            "(all drops)".to_owned(),
            human_count(tier.dropped.packets as f64),
            human_bytes(tier.dropped.bytes as f64),
            human_rate(tier.dropped.packets_per_sec),
            human_byte_rate(tier.dropped.bytes_per_sec),
        ]);
    }
    let rates = if s.sample_interval_secs > 0.0 {
        format!("rates over the last {:.1}s", s.sample_interval_secs)
    } else {
        "rates appear after two samples (one second)".to_owned()
    };
    let mut usage = Table::new(&[
        "TIER",
        ">PACKETS/S",
        ">BYTES/S",
        ">REQUESTS/S",
        ">ACTIVE SOURCES",
        ">LIMITED NOW",
    ]);
    for tier in &s.tiers {
        let u = &tier.usage;
        usage.row(vec![
            tier.name.clone(),
            human_rate(u.packets_per_second),
            human_byte_rate(u.bytes_per_second),
            human_rate(u.requests_per_second),
            u.active_sources.to_string(),
            u.limited_sources.to_string(),
        ]);
    }
    format!(
        "{}\ntotals since the program was loaded; {rates}\n\nusage (last second; requests estimated from samples; sources from the kernel's bucket state)\n{}",
        t.render(),
        usage.render()
    )
}

pub fn render_http_top(t: &proto::HttpTopData) -> String {
    if t.rows.is_empty() {
        return "no HTTP requests sampled yet (plaintext HTTP/1.x to the ports in [http] ports)"
            .to_owned();
    }
    let by = match t.by {
        crate::http::stats::Group::Route => "ROUTE",
        crate::http::stats::Group::Host => "HOST",
        crate::http::stats::Group::Method => "METHOD",
        crate::http::stats::Group::Tier => "TIER",
        crate::http::stats::Group::ConfigRoute => "CONFIGURED ROUTE",
    };
    let mut table = Table::new(&[by, ">REQUESTS"]);
    for (label, n) in &t.rows {
        table.row(vec![label.clone(), human_count(*n as f64)]);
    }
    format!(
        "{}\nestimated requests (samples × 1-in-K); {} sampled heads were not HTTP/1.x",
        table.render(),
        t.malformed
    )
}

/// `http inventory`: the endpoints, then (against a document) the shadow
/// endpoints, orphan operations and drift.
pub fn render_inventory(d: &proto::InventoryData) -> String {
    let mut out = String::new();
    if d.endpoints.is_empty() {
        out.push_str("no endpoints seen yet (plaintext HTTP/1.x to the ports in [http] ports)\n");
    } else {
        let with_status = d.spec.is_some();
        let mut headers = vec![
            "METHOD",
            "HOST",
            "ROUTE",
            ">REQUESTS",
            ">SOURCES",
            "FIRST SEEN",
            "LAST SEEN",
            "AUTH",
            "CONTENT TYPES",
            ">MAX LENGTH",
        ];
        if with_status {
            headers.push("STATUS");
        }
        let mut table = Table::new(&headers);
        let ago = |t: u64| format!("{} ago", human_duration(d.now.saturating_sub(t)));
        let counts = |m: &std::collections::BTreeMap<String, u64>| {
            if m.is_empty() {
                return "-".to_owned();
            }
            m.iter()
                .map(|(k, n)| format!("{k}:{}", human_count(*n as f64)))
                .collect::<Vec<_>>()
                .join(",")
        };
        for e in &d.endpoints {
            let mut row = vec![
                e.method.clone(),
                e.host.clone(),
                e.route.clone(),
                human_count(e.requests as f64),
                human_count(e.sources as f64),
                ago(e.first_seen),
                ago(e.last_seen),
                counts(&e.auth),
                counts(&e.content_types),
                e.max_content_length
                    .map_or("-".to_owned(), |n| human_bytes(n as f64)),
            ];
            if with_status {
                row.push(e.status.clone().unwrap_or_else(|| "-".to_owned()));
            }
            table.row(row);
        }
        out.push_str(&table.render());
        out.push_str(&format!(
            "{} endpoints (keeping {} of at most {}); requests are estimates (samples × 1-in-K)\n",
            d.endpoints.len(),
            d.kept,
            d.max_endpoints
        ));
    }
    let Some(spec) = &d.spec else {
        return out;
    };
    out.push_str(&format!(
        "\nOpenAPI {} ({}): {} operations; {} documented, {} shadow, {} orphan, {} drift\n",
        spec.source,
        spec.version,
        spec.operations,
        spec.documented,
        spec.shadow,
        spec.orphan,
        spec.drift
    ));
    let shadow: Vec<_> = d
        .endpoints
        .iter()
        .filter(|e| e.status.as_deref() == Some("shadow"))
        .collect();
    if !shadow.is_empty() {
        out.push_str("\nShadow endpoints (seen, not in the document):\n");
        let mut t = Table::new(&["METHOD", "HOST", "ROUTE", ">REQUESTS"]);
        for e in shadow {
            t.row(vec![
                e.method.clone(),
                e.host.clone(),
                e.route.clone(),
                human_count(e.requests as f64),
            ]);
        }
        out.push_str(&t.render());
    }
    if !d.orphans.is_empty() {
        out.push_str("\nOrphan operations (documented, never seen):\n");
        let mut t = Table::new(&["METHOD", "PATH", "OPERATION ID"]);
        for o in &d.orphans {
            t.row(vec![
                o.method.clone(),
                o.path.clone(),
                o.operation_id.clone().unwrap_or_else(|| "-".to_owned()),
            ]);
        }
        out.push_str(&t.render());
    }
    if !d.drift.is_empty() {
        out.push_str("\nDrift (requests a documented operation does not allow):\n");
        let mut t = Table::new(&["KIND", "METHOD", "HOST", "ROUTE", ">REQUESTS", "DETAIL"]);
        for r in &d.drift {
            t.row(vec![
                r.kind.clone(),
                r.method.clone(),
                r.host.clone(),
                r.route.clone(),
                r.requests.map_or("-".to_owned(), |n| human_count(n as f64)),
                format!("{} ({})", r.detail, r.operation),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

/// One `http tail` line: time, source, verdict, method, redacted target, host.
pub fn render_tail_event(e: &crate::monitor::TailEvent) -> String {
    let secs = e.unix_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!(
        "{h:02}:{m:02}:{s:02}.{:03} {} :{} {} [{}] {} {} host={}{}{}",
        e.unix_ms % 1000,
        e.source,
        e.dst_port,
        e.tier,
        e.verdict,
        e.method,
        e.target,
        e.host.as_deref().unwrap_or("-"),
        e.config_route
            .as_deref()
            .map_or(String::new(), |r| format!(" route={r}")),
        if e.complete { "" } else { " (head truncated)" }
    )
}

pub fn render_top(t: &TopData) -> String {
    if t.rows.is_empty() {
        return match &t.source {
            Some(net) => format!("no sources observed in {net} (tracking {})", t.tracked),
            None => format!(
                "no sources observed yet (tracking {}): top talkers come from the kernel's sampled verdicts",
                t.tracked
            ),
        };
    }
    let mut table = Table::new(&[
        "SOURCE",
        ">ADDRS",
        "TIER",
        ">PACKETS",
        ">BYTES",
        ">DROPS",
        ">REQUESTS",
        ">±",
    ]);
    for r in &t.rows {
        table.row(vec![
            if r.bucket.is_empty() {
                r.source.to_string()
            } else {
                r.bucket.clone()
            },
            r.addresses.to_string(),
            r.tier.clone(),
            human_count(r.packets as f64),
            human_bytes(r.bytes as f64),
            human_count(r.drops as f64),
            human_count(r.requests as f64),
            human_count(r.error as f64),
        ]);
    }
    let by = match t.by {
        TopBy::Packets => "packets",
        TopBy::Drops => "drops",
        TopBy::Requests => "requests",
    };
    format!(
        "{}\nranked by {by} (estimates; ± is the largest possible overcount; counts halve every 10s)",
        table.render()
    )
}

fn wait(secs: f64) -> String {
    if secs <= 0.0 {
        "now".to_owned()
    } else if secs < 1.0 {
        format!("in {:.0} ms", (secs * 1000.0).ceil())
    } else {
        format!("in {secs:.1} s")
    }
}

pub fn render_explain(e: &proto::ExplainData) -> String {
    let mut out = format!("{}\n\n", e.summary);
    let rule = match &e.rule {
        Some(r) => format!("{} ({}, from {})", r.cidr, r.action, r.origin),
        None => "none (the default tier applies)".to_owned(),
    };
    out.push_str(&format!("rule:     {rule}\n"));
    if let Some(b) = &e.ban {
        out.push_str(&format!(
            "ban:      {} by {} ({}), {:.0} s left, offence {}\n",
            b.source, b.rule, b.reason, b.left_secs, b.offence
        ));
    }
    out.push_str(&format!(
        "tier:     {}{} (index {}, {}, IPv6 grouped by /{})\n",
        e.tier,
        if e.default_tier { " (default)" } else { "" },
        e.tier_index,
        format!("{:?}", e.mode).to_lowercase(),
        e.ipv6_prefix
    ));
    out.push_str(&format!(
        "tracked:  {}\n",
        if e.tracked {
            format!("yes, as {}", e.key)
        } else {
            format!(
                "no (would be tracked as {}, starting with full buckets)",
                e.key
            )
        }
    ));
    if !e.buckets.is_empty() || e.aggregate.is_some() {
        let mut t = Table::new(&["LIMIT", "RATE", ">BURST", ">AVAILABLE", "NEXT", "FULL"]);
        for b in e.buckets.iter().chain(&e.aggregate) {
            let bytes = b.limit == "bytes";
            let n = |x: f64| {
                if bytes {
                    human_bytes(x)
                } else {
                    format!("{x:.1}")
                }
            };
            t.row(vec![
                if b.limit == "aggregate" {
                    "aggregate (all sources of the tier)".to_owned()
                } else {
                    b.limit.clone()
                },
                b.rate.clone(),
                n(b.burst as f64),
                n(b.available),
                wait(b.next_in_secs),
                wait(b.full_in_secs),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    match &e.recent {
        Some(r) => {
            out.push_str(&format!(
                "\nrecent (sampled estimates{}): {} packets, {} dropped, {} requests; top rank {} by packets, {} by drops\n",
                if r.addresses > 1 {
                    format!(", {} addresses in {}", r.addresses, e.key)
                } else {
                    String::new()
                },
                human_count(r.packets as f64),
                human_count(r.drops as f64),
                human_count(r.requests as f64),
                r.rank_packets.map_or("-".to_owned(), |x| format!("#{x}")),
                r.rank_drops.map_or("-".to_owned(), |x| format!("#{x}")),
            ));
            let verdicts: Vec<String> = r
                .verdicts
                .iter()
                .map(|(v, n)| format!("{v} {}", human_count(*n as f64)))
                .collect();
            if !verdicts.is_empty() {
                out.push_str(&format!("verdicts: {}\n", verdicts.join(", ")));
            }
        }
        None => out.push_str("\nrecent: not among the sampled top talkers\n"),
    }
    out
}

pub fn render_drop_event(e: &proto::DropEvent) -> String {
    let when = chrono_free_time(e.time);
    format!("{when} {}", e.text())
}

/// `HH:MM:SS` (UTC) of a Unix time.
fn chrono_free_time(unix: f64) -> String {
    let s = unix as u64 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{BucketState, ExplainData, ExplainRule, RecentTraffic};

    #[test]
    fn explain_reads_as_an_answer() {
        let mut e = ExplainData {
            address: "2001:db8:1:2::7".parse().unwrap(),
            action: "limited".into(),
            rule: Some(ExplainRule {
                cidr: "2001:db8::/32".into(),
                action: "tier".into(),
                origin: "cli".into(),
            }),
            tier: "gold".into(),
            tier_index: 1,
            default_tier: false,
            mode: crate::spec::TierMode::Enforce,
            ipv6_prefix: 48,
            key: "2001:db8:1::/48".into(),
            tracked: true,
            buckets: vec![BucketState {
                limit: "packets".into(),
                rate: "10/s".into(),
                per_second: 10.0,
                burst: 20,
                available: 0.0,
                next_in_secs: 0.1,
                full_in_secs: 2.0,
            }],
            aggregate: None,
            recent: Some(RecentTraffic {
                addresses: 3,
                packets: 500,
                drops: 400,
                verdicts: [("dropped_packets".to_owned(), 400)].into(),
                rank_packets: Some(1),
                rank_drops: Some(1),
                ..Default::default()
            }),
            ban: None,
            summary: "limited by packets".into(),
        };
        let out = render_explain(&e);
        for want in [
            "rule:     2001:db8::/32 (tier, from cli)",
            "tracked:  yes, as 2001:db8:1::/48",
            "in 100 ms",
            "3 addresses in 2001:db8:1::/48",
            "dropped_packets 400",
        ] {
            assert!(out.contains(want), "{want:?} in {out}");
        }
        e.tracked = false;
        e.recent = None;
        let out = render_explain(&e);
        assert!(
            out.contains("starting with full buckets") && out.contains("not among"),
            "{out}"
        );
        let line = render_drop_event(&proto::DropEvent {
            time: 3600.0 * 25.0 + 61.0,
            event: "limited".into(),
            source: "192.0.2.7".into(),
            tier: "default".into(),
            reason: "packets".into(),
            tier_limited: 4,
            limited_secs: None,
            started: 0,
            stopped: 0,
        });
        assert_eq!(
            line,
            "01:01:01 source 192.0.2.7 started being limited: tier default, packets bucket full (4 sources of the tier limited)"
        );
    }
}
