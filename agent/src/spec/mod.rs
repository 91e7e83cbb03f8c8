//! The operator's intent as plain data: tiers and the one way to change one
//! ([`TierPatch`]), rules and their kernel form, routes (cost and ceiling per
//! endpoint) and their kernel form, the kernel's source keys and
//! the one userspace longest-prefix match. No I/O, no aya; every rule that
//! concerns one tier or one rule on its own is written here, once. Rules that
//! relate parts of a configuration to each other are `config::validate`'s.

mod adaptive;
mod attach;
mod lpm;
mod patch;
mod response;
mod route;
mod rule;
mod source;
mod tier;

pub use adaptive::{
    AdaptiveError, AdaptiveParams, AdaptiveSpec, DEFAULT_CALM_SECONDS, DEFAULT_DECREASE,
    DEFAULT_INCREASE, DEFAULT_MIN, Law, MAX_PROBE_TIMEOUT, MIN_FACTOR, PsiLine, PsiWindow,
    SignalSource, scale_limit, scale_tier,
};
pub use attach::AttachMode;
pub use lpm::Lpm;
pub use patch::{SizeValue, TierPatch};
pub use response::{Ban, BanBook, CLI_BAN, Evidence, Offences, ResponseMode, ResponseRule};
pub use route::{
    DEFAULT_ROUTE_COST, MAX_ROUTE_NAME, METHODS, RouteFieldError, RouteInput, RouteKernel,
    RouteProblem, RouteSpec, RouteTable, check_route_name, match_text, parse_match,
};
pub use rule::{CidrError, RuleInput, RuleSpec, RuleTarget, TargetError, parse_cidr};
pub use source::SourceKey;
pub use tier::{
    GlobalField, GlobalLimit, IPV6_PREFIX_RANGE, LimitError, LimitField, LimitSpec,
    MAX_BURST_WINDOW, MAX_BYTES_PER_SECOND, MAX_COUNT_PER_SECOND, MIN_DEFAULT_BYTES_BURST,
    NEW_SOURCES_TURNOVER, NameError, ResolvedLimit, TierFieldError, TierMode, TierProblem,
    TierSpec, check_ipv6_prefix, check_tier_name, default_new_sources, quoted,
};
