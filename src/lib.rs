//! wharf: an OCI Distribution registry for Cloudflare Workers, with manifests and blobs in R2
//! and tags in KV.
//!
//! Everything but [`worker`] is platform-free and tested natively: the HTTP model ([`http`]),
//! routing ([`router`]), the identifiers ([`names`]), the error table ([`error`]), storage keys
//! ([`keys`]) and contracts ([`storage`]), one module per OCI resource ([`manifests`],
//! [`blobs`], [`uploads`], [`tags`]), and the pull-through cache mode ([`proxy`]). [`worker`] adapts it to the Workers runtime and is compiled
//! only for wasm32.

pub mod auth;
pub mod blobs;
pub mod caching;
pub mod config;
pub mod de;
pub mod error;
pub mod gc;
pub mod hashing;
pub mod http;
pub mod keys;
pub mod log;
pub mod manifests;
pub mod memo;
pub mod names;
pub mod notify;
pub mod pagination;
pub mod proxy;
pub mod referrers;
pub mod registry;
pub mod router;
#[cfg(feature = "selftest")]
pub mod selftest;
pub mod storage;
pub mod tags;
pub mod time;
pub mod ui;
pub mod uploads;

#[cfg(target_arch = "wasm32")]
mod worker;

pub use config::Config;
pub use registry::Registry;
