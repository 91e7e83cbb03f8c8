//! How the XDP program is attached to an interface, as an operator asks for it.

/// The XDP attach mode an operator asks for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic with a warning.
    Auto,
    /// Native only: fail if the driver lacks XDP support.
    Native,
    /// Generic (skb) mode.
    Generic,
}
