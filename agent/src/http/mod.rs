//! The L7 monitor's userspace half: parsing sampled request heads, templating
//! routes, redacting secrets, and aggregating with bounded cardinality.
//!
//! Only plaintext HTTP/1.x requests arriving on the attached interfaces are
//! visible: TLS and HTTP/2 are opaque at XDP.

pub(crate) mod redact;
pub(crate) mod request;
pub(crate) mod route;
pub(crate) mod stats;

pub(crate) use request::parse_request;
pub(crate) use stats::{HttpKey, HttpStats};
