//! The bottom layer: what every other module builds on, depending on nothing of wharf's above
//! it.

pub mod cors;
pub mod de;
pub mod error;
pub mod hashing;
pub mod http;
pub mod log;
pub mod media;
pub mod names;
pub mod pagination;
pub mod router;
pub mod time;
