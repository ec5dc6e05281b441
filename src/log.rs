//! Logging without a platform dependency: the core writes through a sink the host installs
//! (the Worker points it at `console.error`); natively it goes to stderr.

use std::sync::OnceLock;

static SINK: OnceLock<fn(&str)> = OnceLock::new();

/// Installs the log sink; the first call wins.
pub fn set_sink(sink: fn(&str)) {
    let _ = SINK.set(sink);
}

pub fn error(message: &str) {
    match SINK.get() {
        Some(sink) => sink(message),
        None => eprintln!("{message}"),
    }
}
