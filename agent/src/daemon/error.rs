//! Why a control command was refused, in the words the CLI shows.

use std::{io, path::PathBuf};

use ipnet::IpNet;

use crate::{
    config::{ConfigError, Invalid},
    datapath::kernel::KernelError,
    spec::{CidrError, quoted},
    state::StateError,
};

#[derive(Debug, thiserror::Error)]
pub(super) enum CommandError {
    /// A change the configuration's rules refuse (`config::validate`).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The file with the changes made with the CLI, or a reloaded file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("rule: cidr = {}: {error}", quoted(cidr))]
    Cidr { cidr: String, error: CidrError },
    #[error("no tier named \"{name}\" (tiers: {tiers})")]
    NoSuchTier { name: String, tiers: String },
    #[error(
        "tier \"{0}\" is the default tier and cannot be removed: set another default_tier in the config file and reload first"
    )]
    DefaultTier(String),
    #[error(
        "tier \"{name}\" is used by {} rule{} ({}): remove {} first with `tollgate rule rm CIDR`",
        rules.len(),
        if rules.len() == 1 { "" } else { "s" },
        rules.join(", "),
        if rules.len() == 1 { "it" } else { "them" }
    )]
    TierInUse { name: String, rules: Vec<String> },
    #[error("no rule for {0} (see `tollgate rule list`)")]
    NoSuchRule(IpNet),
    #[error("no route named \"{name}\" (routes: {})", if routes.is_empty() { "none" } else { routes })]
    NoSuchRoute { name: String, routes: String },
    #[error(
        "applying the change to the kernel failed: {0:#}; the previous configuration is still in effect"
    )]
    Kernel(anyhow::Error),
    #[error(
        "could not save the change to {}: {error}; it was rolled back and is not in effect",
        path.display()
    )]
    Save { path: PathBuf, error: io::Error },
    #[error("reload failed, the running configuration is unchanged: {0}")]
    Reload(Box<CommandError>),
    #[error("detach failed: {0:#}")]
    Detach(anyhow::Error),
    #[error("reading counters: {0}")]
    Counters(KernelError),
    #[error("reading the kernel's maps: {0}")]
    ReadMaps(KernelError),
    #[error(
        "tier \"{0}\" has no changes made with the CLI: the config file's values already apply"
    )]
    NoTierChanges(String),
    #[error(
        "tier \"{0}\" exists only through the CLI (the config file has no such tier): remove it with `tollgate tier rm {0}`"
    )]
    CliOnlyTier(String),
    #[error(
        "rule {0} has no change made with the CLI: the config file's rule (or none) already applies"
    )]
    NoRuleChange(String),
    #[error("top --source {cidr}: {error}")]
    SourceFilter { cidr: String, error: CidrError },
    #[error("http_tail streams: the control server handles it, not this function")]
    Streams,
    #[error("ban: {} : {error}", quoted(cidr))]
    BanCidr { cidr: String, error: CidrError },
    #[error("ban --for {}: {error}", quoted(text))]
    BanLength {
        text: String,
        error: crate::units::DurationError,
    },
    #[error("ban --for must be between 1s and 365d")]
    BanLengthRange,
    #[error(
        "{net} is allow-listed by the rule for {rule}: an allow-listed source is never banned (remove the allow rule first)"
    )]
    BanAllowListed { net: IpNet, rule: IpNet },
    #[error("{0} is not banned (see `tollgate ban list`)")]
    NotBanned(IpNet),
}
