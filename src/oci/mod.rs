//! The OCI resources, one module each, and the pull-through cache mode that fetches them from
//! another registry.

pub mod blobs;
pub mod caching;
pub mod manifests;
pub mod proxy;
pub mod referrers;
pub mod tags;
pub mod uploads;
