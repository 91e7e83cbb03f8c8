//! The L7 monitor's userspace half: parsing sampled request heads, templating
//! routes, redacting secrets, and aggregating with bounded cardinality.
//!
//! Only plaintext HTTP/1.x requests arriving on the attached interfaces are
//! visible: TLS and HTTP/2 are opaque at XDP.

pub mod redact;
pub mod request;
pub mod route;
pub mod stats;

pub use request::{ParsedRequest, parse_request};
pub use route::template;
pub use stats::{HttpKey, HttpStats};
