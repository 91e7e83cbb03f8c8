//! The `tollgate` command line: argument definitions, talking to the daemon,
//! and rendering its answers as aligned tables with human units (or JSON).

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};
use clap::{ArgGroup, Args, Parser, Subcommand};
use serde::Serialize;

use crate::{
    client::{self, ClientError},
    config, datapath,
    datapath::kernel::AttachMode,
    proto::{self, Done, Request, RouteRow, RuleRow, StatsData, StatusData, TierRow, TopData},
    spec::{RouteInput, RuleInput, TierMode, TierPatch},
    talkers::TopBy,
};

mod adaptive;
mod bans;
mod bouncer;
mod operator;
mod render;
pub use render::*;

const AFTER_HELP: &str = "\
Examples:
  tollgate run --iface eth0          protect eth0 with the built-in default tier
  tollgate run --config /etc/tollgate/tollgate.toml
  tollgate status
  tollgate tier set gold --packets 500/s --burst 1000 --requests 100/s
  tollgate rule add 203.0.113.0/24 --tier gold
  tollgate rule add 198.51.100.7 --deny
  tollgate route add search --match \"POST /api/search\" --cost 20 --ceiling 200/s
  tollgate route list
  tollgate stats --tier gold
  tollgate top --by drops -n 10
  tollgate explain 203.0.113.7       why this address is dropped (or not)
  tollgate events                    follow sources starting/stopping being limited
  tollgate tier reset gold           drop CLI changes: the file's values apply
  tollgate --json tier list
  tollgate reload                    re-read the config file (same as SIGHUP)
  tollgate detach                    remove the program from every interface

Changes made with `tier set/rm`, `rule add/rm` and `route add/rm` are saved in
the state file and survive reloads and restarts; they take precedence over the
config file.";

/// tollgate: a kernel-level (XDP) API rate limiter.
///
/// `tollgate run` is the daemon: it attaches an XDP program that enforces
/// per-source token buckets (packets, bytes, new connections, HTTP requests)
/// grouped in tiers, and serves a control socket. Every other command talks
/// to the running daemon through that socket.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The daemon's control socket [default: from the config, else /run/tollgate/tollgate.sock].
    /// Example: --socket /tmp/tg/tollgate.sock
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_SOCKET",
        value_name = "PATH",
        help_heading = "Global options"
    )]
    pub socket: Option<PathBuf>,

    /// The config file. For `run`, what to enforce (without it, the embedded
    /// default); for other commands, where to find the socket and pin dir
    /// [default for those: /etc/tollgate/tollgate.toml if it exists].
    /// Example: --config /etc/tollgate/tollgate.toml
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help_heading = "Global options"
    )]
    pub config: Option<PathBuf>,

    /// Print JSON instead of tables (for scripts). Example: tollgate --json stats
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: attach the XDP program and serve the control socket
    /// until SIGTERM/SIGINT (the program stays attached; see `detach`).
    /// SIGHUP reloads the config. Example: tollgate run --iface eth0
    Run(RunArgs),
    /// Show interfaces, XDP mode, program id, uptime, map fill levels and
    /// where the config comes from. With no daemon running, says what the
    /// pins still enforce (and exits non-zero). Example: tollgate status
    Status(StatusArgs),
    /// List, create, change or remove tiers. Example: tollgate tier list
    #[command(subcommand)]
    Tier(TierCommand),
    /// List, add or remove rules that map source CIDRs to tiers, or allow or
    /// deny them outright. Example: tollgate rule list
    #[command(subcommand)]
    Rule(RuleCommand),
    /// List, add or remove routes: what one HTTP request to an endpoint
    /// charges its source's requests limit (cost), and the ceiling all
    /// sources share for it. Example: tollgate route list
    #[command(subcommand)]
    Route(RouteCommand),
    /// List, add or lift bans: expiring denies issued by `[[response]]`
    /// rules (sources that kept being refused) or by hand.
    /// Example: tollgate ban add 203.0.113.7 --for 10m
    #[command(subcommand)]
    Ban(bans::BanCommand),
    /// Passed and dropped packets and bytes per tier, by verdict, with
    /// current rates. Example: tollgate stats --tier gold
    Stats(StatsArgs),
    /// The heaviest sources right now, per tracked bucket: an IPv4 address,
    /// or the IPv6 prefix its tier enforces (with the addresses seen in it).
    /// Example: tollgate top --by drops -n 10 --source 2001:db8::/32
    Top(TopArgs),
    /// Why an address gets what it gets: the rule that matches (and where it
    /// comes from: file, CLI, API-key pin, cluster deny), its tier and
    /// limits, the key it is tracked under, its buckets now (tokens left,
    /// time to the next admitted packet) and its recent sampled verdicts.
    /// Works for an address never seen. Example: tollgate explain 203.0.113.7
    Explain(operator::ExplainArgs),
    /// Follow the drop log live: a line when a source starts or stops being
    /// limited (bounded under a flood, with a summary of the lines left
    /// out). Ctrl-C stops it. Example: tollgate events
    Events,
    /// The HTTP monitor: sampled plaintext HTTP/1.x requests by route, host,
    /// method or tier, or a live redacted stream. Example: tollgate http top --by route
    #[command(subcommand)]
    Http(HttpCommand),
    /// API keys that move a client to a tier. Example: tollgate api-key hash --salt pepper < key.txt
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Re-read the config file and apply it (tiers, rules, default tier)
    /// without detaching or resetting any bucket. A bad file changes nothing.
    /// Example: tollgate reload
    Reload,
    /// Remove the XDP program from every interface, delete its pins and stop
    /// the daemon. Works without a running daemon given --pin-dir or --config.
    /// Example: tollgate detach
    Detach(DetachArgs),
    /// Check a config file without touching the kernel.
    /// Example: tollgate check --config /etc/tollgate/tollgate.toml
    Check,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// An interface to protect; repeat for several. Overrides `interfaces` in
    /// the config. Example: --iface eth0 --iface eth1
    #[arg(long = "iface", value_name = "IF")]
    pub ifaces: Vec<String>,

    /// XDP attach mode [default: from the config, else auto]. Example: --mode generic
    #[arg(long, value_enum)]
    pub mode: Option<AttachMode>,

    /// bpffs directory for the pinned program, maps and links [default: from
    /// the config, else /sys/fs/bpf/tollgate/default]. Example: --pin-dir /sys/fs/bpf/tollgate/edge
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,

    /// State file keeping CLI changes and tier indices [default: from the
    /// config, else /var/lib/tollgate/state.json]. Example: --state /var/lib/tollgate/state.json
    #[arg(long = "state", value_name = "PATH")]
    pub state: Option<PathBuf>,

    /// How the drop log (a line when a source starts or stops being
    /// limited) is written: `json` (one object a line), `text`, or `auto`
    /// (JSON unless stderr is a terminal). Other log lines stay text.
    /// Example: --log-format json
    #[arg(long, value_enum, default_value = "auto", env = "TOLLGATE_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// `run --log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON unless stderr is a terminal.
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum TierCommand {
    /// List the tiers and their limits (`*` marks the default tier; FACTOR:
    /// an adaptive tier's limits in force are these x FACTOR, set with
    /// `adaptive = { ... }` in the config file). Example: tollgate tier list
    List,
    /// Create a tier, or change the given limits of an existing one (the
    /// others keep their values). Rates are N/s, N/min or N/h, or "unlimited".
    /// Example: tollgate tier set gold --packets 500/s --burst 1000 --bytes 50MB/s
    Set(Box<TierSetCli>),
    /// Remove a tier. The default tier and tiers used by rules cannot be
    /// removed. Example: tollgate tier rm gold
    Rm {
        /// The tier to remove. Example: gold
        name: String,
    },
    /// Drop the changes made to a tier with `tier set` or `tier rm`, so the
    /// config file's values apply again (a CLI change wins over the file
    /// until then; `tier list --json` shows each field's source).
    /// Example: tollgate tier reset gold
    Reset {
        /// The tier, as the config file names it. Example: gold
        name: String,
    },
}

/// `tier set`: the tier patch's flags, plus `--shadow` / `--enforce` for `--mode`.
#[derive(Debug, Args)]
pub struct TierSetCli {
    #[command(flatten)]
    pub patch: TierPatch,
    /// Count what would be dropped, but pass everything (= --mode shadow).
    /// Example: --shadow
    #[arg(long, conflicts_with_all = ["enforce", "mode"])]
    pub shadow: bool,
    /// Drop what is over the limits, the default for new tiers (= --mode
    /// enforce). Example: --enforce
    #[arg(long, conflicts_with = "mode")]
    pub enforce: bool,
}

#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// List the rules. Example: tollgate rule list
    List,
    /// Add the rule for a CIDR (or replace it). The longest matching prefix
    /// wins. Example: tollgate rule add 10.0.0.0/8 --tier gold
    Add(RuleAddCli),
    /// Remove the rule for exactly this CIDR. Example: tollgate rule rm 10.0.0.0/8
    Rm {
        /// The rule's CIDR, as listed. Example: 10.0.0.0/8
        cidr: String,
    },
    /// Drop the change made to this CIDR's rule with `rule add` or `rule
    /// rm`, so the config file's rule for it (or none) applies again.
    /// Example: tollgate rule reset 10.0.0.0/8
    Reset {
        /// The rule's CIDR. Example: 10.0.0.0/8
        cidr: String,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("action").required(true).args(["tier", "allow", "deny"])))]
pub struct RuleAddCli {
    /// Source CIDR, or a single address. Example: 203.0.113.0/24, 2001:db8::/32, 198.51.100.7
    pub cidr: String,
    /// Limit matching sources with this tier. Example: --tier gold
    #[arg(long, value_name = "NAME")]
    pub tier: Option<String>,
    /// Pass matching sources without any limit. Example: --allow
    #[arg(long)]
    pub allow: bool,
    /// Drop everything from matching sources. Example: --deny
    #[arg(long)]
    pub deny: bool,
    /// With --deny: only for this long, then the deny ends on its own. Such
    /// a deny is a ban (see `tollgate ban list`), not a rule.
    /// Example: --deny --for 10m
    #[arg(long = "for", value_name = "DURATION", requires = "deny")]
    pub duration: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// List the routes with their requests, drops and ceiling refusals since
    /// the program was loaded. Example: tollgate route list
    List,
    /// Add a route, or replace the route of this name (it keeps its ceiling's
    /// state). A request's route is the longest configured prefix of its
    /// request line (byte prefix, case-sensitive) on its port.
    /// Example: tollgate route add search --match "POST /api/search" --cost 20 --ceiling 200/s --ceiling-burst 20
    #[command(after_help = ROUTE_ADD_HELP)]
    Add(RouteInput),
    /// Remove a route (its index stays reserved until another route needs
    /// it). Example: tollgate route rm search
    Rm {
        /// The route to remove. Example: search
        name: String,
    },
}

const ROUTE_ADD_HELP: &str = "\
Examples:
  tollgate route add search --match \"POST /api/search\" --cost 20
      one search costs a source 20 of its tier's requests (with requests =
      \"100/s\", a source gets 5 searches/s, or 100 cheap requests/s)
  tollgate route add export --match \"GET /export\" --ceiling 200/s --ceiling-burst 20
      at most 200 exports/s (burst 20) from all sources together
  tollgate route add admin --port 8443 --ceiling 50/s
      a whole port: every request to 8443 (a per-service quota)
  tollgate route add probe --match \"GET /api\" --ceiling 10/s --mode shadow
      count what a ceiling would refuse, refuse nothing

Paths are not normalised: \"/api/%73earch\", \"//api/search\" or an
absolute-form target (\"POST http://host/api/search\") do not match
\"POST /api/search\". The tier's requests burst must hold the cost.";

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this tier. Example: --tier gold
    #[arg(long, value_name = "NAME")]
    pub tier: Option<String>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// What to rank sources by. Example: --by drops
    #[arg(long, value_enum, default_value = "packets")]
    pub by: TopBy,
    /// How many sources to show. Example: -n 10
    #[arg(short = 'n', default_value_t = 20)]
    pub n: usize,
    /// Only sources within this CIDR. Example: --source 2001:db8::/32
    #[arg(long, value_name = "CIDR")]
    pub source: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum HttpCommand {
    /// Estimated requests grouped by route template (ids become {id}), host,
    /// method, tier, or the configured route ([[route]]) they match,
    /// heaviest first. Example: tollgate http top --by config-route
    Top(HttpTopArgs),
    /// A live stream of sampled requests, redacted (no credential header
    /// values, no query values), like tcpdump for HTTP. Ctrl-C stops it.
    /// Example: tollgate http tail
    Tail,
    /// The API inventory the sampled traffic shows: every endpoint (method,
    /// host, route template) with when it was first and last seen, estimated
    /// requests, distinct sources, content types, the largest Content-Length
    /// and the auth schemes presented (never a value). Kept across restarts.
    /// Example: tollgate http inventory --since 1h --openapi openapi.yaml
    ///
    /// With an OpenAPI 3.0/3.1 document (--openapi, or `[http] openapi` in the
    /// daemon's config) each endpoint is `documented` or `shadow` (seen, not
    /// in the document); documented operations never seen are listed as
    /// orphans, and requests a documented operation does not allow as drift
    /// (a content type it does not accept, a Content-Length over its schema's
    /// maxLength or `[http] max_content_length`, no credentials where its
    /// security requires them).
    #[command(after_help = INVENTORY_HELP)]
    Inventory(HttpInventoryArgs),
}

const INVENTORY_HELP: &str = "\
Examples:
  tollgate http inventory                       every endpoint seen, busiest first
  tollgate http inventory --since 1h --sort last-seen
  tollgate http inventory --openapi openapi.yaml
                                                shadow, orphan and drift against a spec
  tollgate --json http inventory --openapi openapi.json | jq '.endpoints[] | select(.status == \"shadow\")'

Routes are templates (/users/42 is /users/{id}); a template segment matches
any path parameter of the document (/users/{userId}), and the document's
servers' base paths (servers: [{url: https://api.example.com/v1}]) are
stripped first. Request counts are estimates (samples × their 1-in-K scale).";

/// How `http inventory` orders its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InventorySort {
    /// Estimated requests, most first.
    Requests,
    /// Distinct sources, most first.
    Sources,
    /// Route template, then method and host.
    Route,
    /// Most recently seen first.
    LastSeen,
    /// Oldest first.
    FirstSeen,
}

#[derive(Debug, Args)]
pub struct HttpInventoryArgs {
    /// Only endpoints seen in the last DURATION (90s, 15m, 2h, 7d); orphans
    /// are then operations not seen in that time. Example: --since 1h
    #[arg(long, value_name = "DURATION", value_parser = parse_since)]
    pub since: Option<u64>,
    /// Row order. Example: --sort last-seen
    #[arg(long, value_enum, default_value = "requests")]
    pub sort: InventorySort,
    /// Compare with this OpenAPI 3.0 or 3.1 document (YAML or JSON), read
    /// here, instead of the daemon's `[http] openapi`. Example: --openapi api.yaml
    #[arg(long, value_name = "FILE")]
    pub openapi: Option<PathBuf>,
}

/// `--since 1h` in seconds.
fn parse_since(s: &str) -> Result<u64, String> {
    crate::units::parse_age(s)
        .map(|d| d.as_secs())
        .map_err(|e| format!("{e}; write e.g. 90s, 15m, 2h or 7d"))
}

#[derive(Debug, Args)]
pub struct HttpTopArgs {
    /// What to group requests by. Example: --by route
    #[arg(long, value_enum, default_value = "route")]
    pub by: crate::http::stats::Group,
    /// How many rows to show. Example: -n 10
    #[arg(short = 'n', default_value_t = 20)]
    pub n: usize,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Print the salted SHA-256 of an API key, for an `[[api_keys.key]]`
    /// entry in the config. The key is read from standard input unless given
    /// (an argument ends up in shell history). Example: tollgate api-key hash --salt pepper --tier gold < key.txt
    Hash(ApiKeyHashArgs),
}

#[derive(Debug, Args)]
pub struct ApiKeyHashArgs {
    /// The salt from `[api_keys] salt` in the config. Example: --salt pepper
    #[arg(long)]
    pub salt: String,
    /// The tier to print in the config snippet. Example: --tier gold
    #[arg(long, default_value = "TIER")]
    pub tier: String,
    /// The key itself (default: read one line from standard input). Example: k-9f2c
    pub key: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Pin directory to read when no daemon is running [default: from the
    /// config, else /sys/fs/bpf/tollgate/default]. Example: --pin-dir /sys/fs/bpf/tollgate/default
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// Pin directory to clean up when no daemon is running [default: from the
    /// config, else /sys/fs/bpf/tollgate/default]. Example: --pin-dir /sys/fs/bpf/tollgate/default
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
}

/// Runs a parsed command line.
pub fn execute(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Run(_) => {
            anyhow::bail!("`tollgate run` is the daemon: main dispatches it, not the CLI")
        }
        Command::Check => {
            let path = cli
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG_PATH));
            let c = config::load_file(&path)?;
            let msg = format!(
                "{}: OK ({} tiers, default tier {}, {} rules, {} routes, interfaces: {})",
                path.display(),
                c.tiers.len(),
                c.default_tier,
                c.rules.len(),
                c.routes.len(),
                if c.interfaces.is_empty() {
                    "none (give --iface to run)".to_owned()
                } else {
                    c.interfaces.join(", ")
                }
            );
            // A file without tiers runs on the built-in one: say so.
            let msg = match c.notice() {
                Some(note) => format!("{msg}\nnote: {note}"),
                None => msg,
            };
            emit(
                cli.json,
                &Done {
                    message: msg.clone(),
                },
                || msg,
            )
        }
        Command::Status(a) => {
            let socket = socket_path(&cli)?;
            match client::request_as::<StatusData>(&socket, &Request::Status {}) {
                Ok(s) => emit(cli.json, &s, || render_status(&s)),
                Err(e) if e.not_running() => {
                    let pin_dir = pin_dir_for(&cli, a.pin_dir.as_ref())?;
                    let o = datapath::dataplane::offline_status(&pin_dir)?;
                    emit(cli.json, &o, || render_offline_status(&o))?;
                    Err(e.into())
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Tier(TierCommand::List) => {
            let rows: Vec<TierRow> = call(&cli, &Request::TierList {})?;
            emit(cli.json, &rows, || render_tiers(&rows))
        }
        Command::Tier(TierCommand::Set(a)) => {
            let mut patch = a.patch.clone();
            if a.shadow {
                patch.mode = Some(TierMode::Shadow);
            } else if a.enforce {
                patch.mode = Some(TierMode::Enforce);
            }
            let req = Request::TierSet(Box::new(patch));
            mutate(&cli, &req)
        }
        Command::Tier(TierCommand::Rm { name }) => {
            mutate(&cli, &Request::TierRm { name: name.clone() })
        }
        Command::Tier(TierCommand::Reset { name }) => {
            mutate(&cli, &Request::TierReset { name: name.clone() })
        }
        Command::Rule(RuleCommand::Reset { cidr }) => {
            mutate(&cli, &Request::RuleReset { cidr: cidr.clone() })
        }
        Command::Explain(a) => operator::explain(&cli, a),
        Command::Events => operator::events(&cli),
        Command::Rule(RuleCommand::List) => {
            let rows: Vec<RuleRow> = call(&cli, &Request::RuleList {})?;
            emit(cli.json, &rows, || render_rules(&rows))
        }
        Command::Rule(RuleCommand::Add(a)) if a.duration.is_some() => bans::add(
            &cli,
            &a.cidr,
            a.duration.as_deref().unwrap_or_default(),
            Some("denied with `rule add --deny --for`".to_owned()),
        ),
        Command::Ban(b) => bans::execute(&cli, b),
        Command::Rule(RuleCommand::Add(a)) => {
            let action = if a.allow {
                Some("allow".to_owned())
            } else if a.deny {
                Some("deny".to_owned())
            } else {
                None
            };
            mutate(
                &cli,
                &Request::RuleAdd(RuleInput {
                    cidr: a.cidr.clone(),
                    tier: a.tier.clone(),
                    action,
                }),
            )
        }
        Command::Rule(RuleCommand::Rm { cidr }) => {
            mutate(&cli, &Request::RuleRm { cidr: cidr.clone() })
        }
        Command::Route(RouteCommand::List) => {
            let rows: Vec<RouteRow> = call(&cli, &Request::RouteList {})?;
            emit(cli.json, &rows, || render_routes(&rows))
        }
        Command::Route(RouteCommand::Add(a)) => {
            mutate(&cli, &Request::RouteAdd(Box::new(a.clone())))
        }
        Command::Route(RouteCommand::Rm { name }) => {
            mutate(&cli, &Request::RouteRm { name: name.clone() })
        }
        Command::Stats(a) => {
            let s: StatsData = call(
                &cli,
                &Request::Stats {
                    tier: a.tier.clone(),
                },
            )?;
            emit(cli.json, &s, || render_stats(&s))
        }
        Command::Top(a) => {
            let t: TopData = call(
                &cli,
                &Request::Top {
                    by: a.by,
                    n: a.n,
                    source: a.source.clone(),
                },
            )?;
            emit(cli.json, &t, || render_top(&t))
        }
        Command::Http(HttpCommand::Top(a)) => {
            let t: proto::HttpTopData = call(&cli, &Request::HttpTop { by: a.by, n: a.n })?;
            emit(cli.json, &t, || render_http_top(&t))
        }
        Command::Http(HttpCommand::Inventory(a)) => {
            let mut data: proto::InventoryData = call(
                &cli,
                &Request::HttpInventory {
                    since_secs: a.since,
                },
            )?;
            if let Some(path) = &a.openapi {
                let spec = crate::openapi::ApiSpec::load(path)?;
                let limit = data.spec.as_ref().and_then(|s| s.max_content_length);
                data.compare(&spec, limit);
            }
            sort_inventory(&mut data, a.sort);
            emit(cli.json, &data, || render_inventory(&data))
        }
        Command::Http(HttpCommand::Tail) => {
            let socket = socket_path(&cli)?;
            let json = cli.json;
            let mut out = io::stdout().lock();
            client::stream(&socket, &Request::HttpTail {}, |data| {
                let line = if json {
                    data.to_string()
                } else {
                    match serde_json::from_value::<crate::monitor::TailEvent>(data.clone()) {
                        Ok(e) => render_tail_event(&e),
                        Err(_) => data.to_string(),
                    }
                };
                writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
            })
            .map_err(|e| anyhow!(e))
        }
        Command::ApiKey(ApiKeyCommand::Hash(a)) => {
            let key = match &a.key {
                Some(k) => k.clone(),
                None => {
                    let mut line = String::new();
                    io::stdin()
                        .read_line(&mut line)
                        .context("reading the key from standard input")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            if key.is_empty() {
                return Err(anyhow!("empty API key"));
            }
            let hash = crate::apikeys::hash_key(&a.salt, key.as_bytes());
            let snippet = format!(
                "[[api_keys.key]]\nsha256 = \"{hash}\"\ntier = \"{}\"",
                a.tier
            );
            emit(
                cli.json,
                &serde_json::json!({ "sha256": hash, "tier": a.tier }),
                || snippet,
            )
        }
        Command::Reload => mutate(&cli, &Request::Reload {}),
        Command::Detach(a) => {
            let socket = socket_path(&cli)?;
            match client::request_as::<Done>(&socket, &Request::Detach {}) {
                Ok(d) => emit(cli.json, &d, || d.message.clone()),
                Err(e) if e.not_running() => {
                    let pin_dir = pin_dir_for(&cli, a.pin_dir.as_ref())?;
                    let msg = datapath::dataplane::detach_offline(&pin_dir)?;
                    emit(
                        cli.json,
                        &Done {
                            message: msg.clone(),
                        },
                        || msg,
                    )
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// The pin directory a command without a daemon reads: the flag, else the
/// config's, else the default.
fn pin_dir_for(cli: &Cli, flag: Option<&PathBuf>) -> Result<PathBuf> {
    Ok(match flag {
        Some(p) => p.clone(),
        None => client_config(cli)?
            .map(|c| c.pin_dir)
            .unwrap_or_else(|| config::DEFAULT_PIN_DIR.into()),
    })
}

/// The config the CLI reads for paths: --config, else the default file if present.
fn client_config(cli: &Cli) -> Result<Option<config::Config>> {
    match &cli.config {
        Some(p) => Ok(Some(config::load_file(p)?)),
        None => {
            let p = Path::new(config::DEFAULT_CONFIG_PATH);
            if p.exists() {
                Ok(config::load_file(p).ok())
            } else {
                Ok(None)
            }
        }
    }
}

fn socket_path(cli: &Cli) -> Result<PathBuf> {
    if let Some(s) = &cli.socket {
        return Ok(s.clone());
    }
    Ok(client_config(cli)?
        .map(|c| c.socket)
        .unwrap_or_else(|| config::DEFAULT_SOCKET.into()))
}

fn call<T: serde::de::DeserializeOwned>(cli: &Cli, req: &Request) -> Result<T> {
    let socket = socket_path(cli)?;
    client::request_as(&socket, req).map_err(|e: ClientError| anyhow!(e))
}

fn mutate(cli: &Cli, req: &Request) -> Result<()> {
    let d: Done = call(cli, req)?;
    emit(cli.json, &d, || d.message.clone())
}

fn sort_inventory(data: &mut proto::InventoryData, by: InventorySort) {
    let key = |e: &proto::EndpointRow| (e.route.clone(), e.method.clone(), e.host.clone());
    data.endpoints.sort_by(|a, b| {
        let first = match by {
            InventorySort::Requests => b.requests.cmp(&a.requests),
            InventorySort::Sources => b.sources.cmp(&a.sources),
            InventorySort::Route => std::cmp::Ordering::Equal,
            InventorySort::LastSeen => b.last_seen.cmp(&a.last_seen),
            InventorySort::FirstSeen => a.first_seen.cmp(&b.first_seen),
        };
        first.then_with(|| key(a).cmp(&key(b)))
    });
}

fn emit<T: Serialize>(json: bool, data: &T, human: impl FnOnce() -> String) -> Result<()> {
    let text = if json {
        serde_json::to_string_pretty(data).context("encoding JSON")?
    } else {
        human()
    };
    let mut out = io::stdout().lock();
    match writeln!(out, "{}", text.trim_end()) {
        // `tollgate ... | head` is fine.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::{render::thousands, *};
    use crate::proto::{Fill, InterfaceStatus, StatsData, StatusData, TierStats, Traffic};

    #[test]
    fn cli_is_consistent_and_every_item_has_an_example() {
        Cli::command().debug_assert();
        fn walk(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                if matches!(arg.get_id().as_str(), "help" | "version") {
                    continue;
                }
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default()
                    + &arg
                        .get_long_help()
                        .map(|h| h.to_string())
                        .unwrap_or_default();
                assert!(
                    help.contains("Example"),
                    "{path} {}: no example in {help:?}",
                    arg.get_id()
                );
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() == "help" {
                    continue;
                }
                let about = sub.get_about().map(|h| h.to_string()).unwrap_or_default()
                    + &sub
                        .get_long_about()
                        .map(|h| h.to_string())
                        .unwrap_or_default();
                assert!(
                    about.contains("Example"),
                    "{path} {}: no example",
                    sub.get_name()
                );
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        walk(&Cli::command(), "tollgate");
    }

    #[test]
    fn parses_the_documented_command_lines() {
        let p = |args: &[&str]| Cli::try_parse_from(args).map_err(|e| e.to_string());
        let c = p(&[
            "tollgate",
            "http",
            "inventory",
            "--since",
            "2h",
            "--sort",
            "last-seen",
            "--openapi",
            "a.yaml",
        ])
        .unwrap();
        match c.command {
            Command::Http(HttpCommand::Inventory(a)) => {
                assert_eq!(a.since, Some(7200));
                assert_eq!(a.sort, InventorySort::LastSeen);
                assert_eq!(a.openapi.as_deref(), Some(Path::new("a.yaml")));
            }
            other => panic!("{other:?}"),
        }
        let e = p(&["tollgate", "http", "inventory", "--since", "2 weeks"]).unwrap_err();
        assert!(e.contains("write e.g. 90s, 15m, 2h or 7d"), "{e}");
        let c = p(&[
            "tollgate",
            "tier",
            "set",
            "default",
            "--packets",
            "10/s",
            "--burst",
            "10",
        ])
        .unwrap();
        assert!(
            matches!(c.command, Command::Tier(TierCommand::Set(ref a)) if a.patch.packets_burst == Some(10))
        );
        assert!(
            p(&["tollgate", "rule", "add", "10.0.0.0/8"]).is_err(),
            "needs an action"
        );
        assert!(p(&["tollgate", "rule", "add", "10.0.0.0/8", "--allow", "--deny"]).is_err());
        assert!(p(&["tollgate", "tier", "set", "x", "--shadow", "--enforce"]).is_err());
        let c = p(&["tollgate", "--json", "top", "--by", "drops", "-n", "3"]).unwrap();
        assert!(
            c.json
                && matches!(
                    c.command,
                    Command::Top(TopArgs {
                        by: TopBy::Drops,
                        n: 3,
                        source: None,
                    })
                )
        );
        let c = p(&[
            "tollgate", "run", "--iface", "a", "--iface", "b", "--mode", "generic", "--socket",
            "/s",
        ])
        .unwrap();
        assert_eq!(c.socket, Some(PathBuf::from("/s")));
        assert!(matches!(c.command, Command::Run(ref r) if r.ifaces == ["a", "b"]));
        let c = p(&["tollgate", "stats", "--json"]).unwrap();
        assert!(c.json, "--json is accepted after the subcommand too");
        let c = p(&[
            "tollgate",
            "route",
            "add",
            "search",
            "--match",
            "POST /api/search",
            "--cost",
            "20",
            "--ceiling",
            "200/s",
            "--ceiling-burst",
            "20",
            "--mode",
            "shadow",
        ])
        .unwrap();
        assert!(matches!(
            c.command,
            Command::Route(RouteCommand::Add(ref r))
                if r.matches.as_deref() == Some("POST /api/search")
                    && r.cost == Some(20)
                    && r.ceiling_burst == Some(20)
                    && r.mode == Some(TierMode::Shadow)
        ));
        assert!(matches!(
            p(&["tollgate", "route", "add", "x", "--match", "GET", "--host", "api.example"]).unwrap().command,
            Command::Route(RouteCommand::Add(r)) if r.host.as_deref() == Some("api.example")
        ));
        let c = p(&["tollgate", "http", "top", "--by", "config-route"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Http(HttpCommand::Top(HttpTopArgs {
                by: crate::http::stats::Group::ConfigRoute,
                ..
            }))
        ));
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["A", ">NUM"]);
        t.row(vec!["long name".into(), "1".into()]);
        t.row(vec!["x".into(), "1000".into()]);
        assert_eq!(
            t.render(),
            "A           NUM\nlong name     1\nx          1000\n"
        );
        assert_eq!(thousands(1_048_576), "1,048,576");
        assert_eq!(thousands(12), "12");
    }

    #[test]
    fn renders_human_units() {
        let mut verdicts = BTreeMap::new();
        verdicts.insert(
            "passed".to_owned(),
            Traffic {
                packets: 1234,
                bytes: 10_000_000,
                packets_per_sec: 1200.0,
                bytes_per_sec: 10_000_000.0,
            },
        );
        let s = StatsData {
            sample_interval_secs: 1.0,
            tiers: vec![TierStats {
                name: "default".into(),
                index: 0,
                passed: Traffic::default(),
                dropped: Traffic::default(),
                verdicts,
                usage: crate::metrics::Usage {
                    requests_per_second: 42.0,
                    active_sources: 17,
                    limited_sources: 3,
                    ..Default::default()
                },
            }],
        };
        let out = render_stats(&s);
        assert!(
            out.contains("1.2k/s") && out.contains("10 MB/s") && out.contains("1.2k"),
            "{out}"
        );
        assert!(
            out.contains("ACTIVE SOURCES") && out.contains(" 17 ") && out.contains("42/s"),
            "{out}"
        );
        let st = StatusData {
            version: "0".into(),
            pid: 1,
            uptime_secs: 75,
            start: "adopted".into(),
            program_id: Some(7),
            interfaces: vec![InterfaceStatus {
                name: "eth0".into(),
                mode: Some(AttachMode::Native),
                attached: true,
                link_id: Some(3),
                program_id: Some(7),
            }],
            config_source: "embedded default".into(),
            pin_dir: "/sys/fs/bpf/x".into(),
            socket: "/run/x.sock".into(),
            state_file: "/var/lib/x".into(),
            default_tier: "default".into(),
            tiers: Fill { used: 1, max: 64 },
            sources_v4: Fill {
                used: 3,
                max: 1 << 20,
            },
            sources_v6: Fill {
                used: 0,
                max: 1 << 18,
            },
            rules_v4: Fill {
                used: 0,
                max: 1 << 16,
            },
            rules_v6: Fill {
                used: 0,
                max: 1 << 16,
            },
            cli_changes: 0,
            bans: 0,
            cluster: None,
            adaptive: vec![],
            crowdsec: None,
        };
        let out = render_status(&st);
        assert!(out.contains("running for 1m 15s"), "{out}");
        assert!(
            out.contains("eth0") && out.contains("native") && out.contains("1,048,576"),
            "{out}"
        );
        assert!(!out.contains("cluster"), "{out}");
        let mut cluster = crate::proto::ClusterStatus {
            up: true,
            redis: "redis://10.0.0.5:6379/".into(),
            node_id: "edge-1".into(),
            sync_interval_ms: 250,
            syncs: 10,
            failures: 0,
            last_sync_secs_ago: Some(0.1),
            round_trip_ms: Some(0.4),
            tracked_sources: 12,
            pushed_last: 3,
            denied_sources: 1,
            denies_total: 4,
            last_error: None,
        };
        let with = |c: &crate::proto::ClusterStatus| {
            render_status(&StatusData {
                cluster: Some(c.clone()),
                ..st.clone()
            })
        };
        let out = with(&cluster);
        assert!(
            out.contains("up: redis://10.0.0.5:6379/ as edge-1, every 250 ms; 1 source denied"),
            "{out}"
        );
        cluster.up = false;
        cluster.last_error = Some("Connection refused".into());
        let out = with(&cluster);
        assert!(
            out.contains("DOWN: redis://10.0.0.5:6379/ (Connection refused); global limits paused"),
            "{out}"
        );
    }

    use std::collections::BTreeMap;
}
