//! The operator's incident commands: `explain` and `events`.

use std::{
    io::{self, Write as _},
    net::IpAddr,
};

use anyhow::{Result, anyhow};
use clap::Args;

use super::{Cli, call, emit, render_drop_event, render_explain, socket_path};
use crate::{
    client,
    proto::{DropEvent, ExplainData, Request},
};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// An IPv4 or IPv6 address (not a CIDR). Example: 2001:db8:1:2::7
    #[arg(value_parser = parse_address)]
    pub address: IpAddr,
}

fn parse_address(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| {
        if s.contains('/') {
            format!("{s:?} is a CIDR: explain takes one address, e.g. 203.0.113.7")
        } else {
            format!("{s:?} is not an IPv4 or IPv6 address (e.g. 203.0.113.7 or 2001:db8::7)")
        }
    })
}

pub(super) fn explain(cli: &Cli, a: &ExplainArgs) -> Result<()> {
    let e: ExplainData = call(cli, &Request::Explain { address: a.address })?;
    emit(cli.json, &e, || render_explain(&e))
}

pub(super) fn events(cli: &Cli) -> Result<()> {
    let socket = socket_path(cli)?;
    let json = cli.json;
    let mut out = io::stdout().lock();
    client::stream(&socket, &Request::Events {}, |data| {
        let line = if json {
            data.to_string()
        } else {
            match serde_json::from_value::<DropEvent>(data.clone()) {
                Ok(e) => render_drop_event(&e),
                Err(_) => data.to_string(),
            }
        };
        writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
    })
    .map_err(|e| anyhow!(e))
}
