//! `tollgate ban list|add|rm`: the bans in force, issued by `[[response]]`
//! rules or by hand. A ban is an expiring deny rule in the kernel, kept in
//! the state file; it ends on its own (the kernel stops applying it at its
//! time even with no daemon running). `rule add CIDR --deny --for T` is the
//! same as `ban add CIDR --for T`: a deny with an expiry is a ban.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{Cli, call, emit, mutate};
use crate::proto::{BanRow, Request};

#[derive(Debug, Subcommand)]
pub enum BanCommand {
    /// The bans in force, soonest end first: the banned prefix, the
    /// `[[response]]` rule that banned it (or "cli"), why, how long is left
    /// and which offence it is (each repeat doubles the ban).
    /// Example: tollgate ban list
    List,
    /// Ban an address or prefix for a while: everything it sends is dropped
    /// until then. Replaces a ban of the same prefix. An allow-listed source
    /// cannot be banned. Example: tollgate ban add 203.0.113.7 --for 10m --reason "credential stuffing"
    Add(BanAddArgs),
    /// Lift the ban of exactly this prefix now (as `ban list` shows it).
    /// Example: tollgate ban rm 203.0.113.7/32
    Rm {
        /// The banned address or prefix. Example: 203.0.113.7
        cidr: String,
    },
}

#[derive(Debug, Args)]
pub struct BanAddArgs {
    /// An address or a CIDR. Example: 203.0.113.7, 198.51.100.0/24, 2001:db8:1::/48
    pub cidr: String,
    /// How long: a whole number of seconds, minutes, hours or days.
    /// Example: --for 90s, --for 10m, --for 2h, --for 7d
    #[arg(long = "for", value_name = "DURATION")]
    pub duration: String,
    /// Why, as `ban list` and the log show it. Example: --reason "scraping /api/search"
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

pub(super) fn execute(cli: &Cli, cmd: &BanCommand) -> Result<()> {
    match cmd {
        BanCommand::List => {
            let rows: Vec<BanRow> = call(cli, &Request::BanList {})?;
            emit(cli.json, &rows, || render(&rows))
        }
        BanCommand::Add(a) => add(cli, &a.cidr, &a.duration, a.reason.clone()),
        BanCommand::Rm { cidr } => mutate(cli, &Request::BanRm { cidr: cidr.clone() }),
    }
}

/// `ban add`, and `rule add CIDR --deny --for T`.
pub(super) fn add(cli: &Cli, cidr: &str, duration: &str, reason: Option<String>) -> Result<()> {
    mutate(
        cli,
        &Request::BanAdd {
            cidr: cidr.to_owned(),
            duration: duration.to_owned(),
            reason,
        },
    )
}

fn render(rows: &[BanRow]) -> String {
    if rows.is_empty() {
        return "no bans".to_owned();
    }
    let mut out = format!(
        "{:<24} {:<16} {:>9} {:>7}  {}\n",
        "SOURCE", "RULE", "LEFT", "OFFENCE", "REASON"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<24} {:<16} {:>9} {:>7}  {}\n",
            r.source,
            r.rule,
            crate::units::human_duration(r.left_secs.ceil() as u64),
            r.offence,
            r.reason
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_read_as_a_table() {
        let rows = vec![BanRow {
            source: "203.0.113.7/32".into(),
            rule: "scrapers".into(),
            reason: "refused 40 requests in 5 of the last 30 s".into(),
            since: 0.0,
            until: 120.0,
            left_secs: 90.2,
            offence: 2,
        }];
        let out = render(&rows);
        assert!(out.contains("203.0.113.7/32"), "{out}");
        assert!(out.contains("1m 31s"), "{out}");
        assert!(out.contains("refused 40 requests"), "{out}");
        assert_eq!(render(&[]), "no bans");
    }
}
