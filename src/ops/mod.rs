//! Operating the registry: garbage collection, the copy of KV-only tags into R2, the web UI,
//! notifications and the self-test endpoints.

pub mod gc;
pub mod migrate;
pub mod notify;
#[cfg(feature = "selftest")]
pub mod selftest;
pub mod ui;
