//! Operating the registry: garbage collection, the web UI, notifications and the self-test
//! endpoints.

pub mod gc;
pub mod notify;
#[cfg(feature = "selftest")]
pub mod selftest;
pub mod ui;
