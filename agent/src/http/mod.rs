//! The L7 monitor's userspace half: parsing sampled request heads, templating
//! routes, redacting secrets, aggregating with bounded cardinality, and the
//! API inventory with its comparison against an OpenAPI document.
//!
//! Only plaintext HTTP/1.x requests arriving on the attached interfaces are
//! visible: TLS and HTTP/2 are opaque at XDP.

pub(crate) mod conformance;
pub(crate) mod inventory;
pub(crate) mod redact;
pub(crate) mod request;
pub(crate) mod route;
pub(crate) mod stats;

pub use conformance::{DriftRow, InventoryData, Orphan, SpecSummary};
pub use inventory::{AuthScheme, EndpointRow};
pub(crate) use request::parse_request;
pub(crate) use stats::{HttpKey, HttpStats};
