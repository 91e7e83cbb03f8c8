//! `tollgate run`'s options and the configuration they select.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::{
    config::{self, Config, ConfigError},
    datapath::kernel::AttachMode,
};

/// `tollgate run`'s options; anything set here overrides the config file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub interfaces: Vec<String>,
    pub mode: Option<AttachMode>,
    pub pin_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
    /// Write the drop log's lines as JSON objects (one per line) rather
    /// than text.
    pub drop_log_json: bool,
}

impl RunOptions {
    /// The config file (or the embedded default) with the overrides applied.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => config::load_file(path)?,
            None => config::embedded_default(),
        };
        if !self.interfaces.is_empty() {
            for iface in &self.interfaces {
                config::check_interface_name(iface).map_err(|problem| ConfigError::Interface {
                    iface: iface.clone(),
                    problem,
                })?;
            }
            c.interfaces = self.interfaces.clone();
        }
        if let Some(m) = self.mode {
            c.mode = m;
        }
        if let Some(p) = &self.pin_dir {
            c.pin_dir = absolute(p);
        }
        if let Some(p) = &self.socket {
            c.socket = absolute(p);
        }
        if let Some(p) = &self.state_file {
            c.state_file = absolute(p);
        }
        Ok(c)
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}
