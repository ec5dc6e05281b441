//! wharf: an OCI Distribution registry for Cloudflare Workers, with manifests and blobs in R2
//! and tags in KV.
//!
//! Everything but `worker` is platform-free and tested natively. The modules are layers, each
//! using only those listed before it (`scripts/module-graph.py` checks that no cycle creeps in):
//!
//! - [`base`]: identifiers, the error table, the HTTP model and its routes, media types;
//! - [`storage`]: the storage contracts, the keys and records kept in them, the isolate's memo;
//! - [`auth`]: access control;
//! - [`config`]: the settings, read from the Worker's variables, each feature's in a submodule;
//! - [`registry`]: the [`Registry`]: storage, settings, what the host supplies, the request's
//!   state;
//! - [`oci`]: one module per OCI resource, and the pull-through cache that can back them;
//! - [`ops`]: operations: garbage collection, the web UI, notifications, the self-test endpoints;
//! - [`dispatch`]: from a request to the handler of its route, and the work after the response;
//! - `worker`: adapts it all to the Workers runtime; compiled only for wasm32.

pub mod base;
pub mod storage;

pub mod auth;
pub mod config;
pub mod registry;

pub mod oci;
pub mod ops;

pub mod dispatch;

#[cfg(target_arch = "wasm32")]
mod worker;

pub use config::Config;
pub use registry::Registry;
