//! Structured logs: one JSON object per line, for `wrangler tail` and Workers Logs. The core
//! writes through a sink the host installs (the Worker points it at `console.log`); natively it
//! goes to stderr. Nothing secret is ever logged: no header values, no query strings, only the
//! kind of route and the repository.

use crate::json::Json;
use std::cell::{Cell, RefCell};

/// `WHARF_LOG_LEVEL`: `off`, `error` (failures and 5xx answers, the default), `info` (one line
/// per request) or `debug` (also the client's User-Agent). `error` is the default because a
/// line per request is not free: under `wrangler dev` it cost 60% of pull throughput (each line
/// crosses into wrangler's terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    Off,
    #[default]
    Error,
    Info,
    Debug,
}

impl Level {
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value.trim() {
            "off" => Level::Off,
            "" | "error" => Level::Error,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Error => "error",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

type Sink = Box<dyn Fn(&str)>;

// A Worker isolate runs on one thread; natively each test thread has its own sink.
thread_local! {
    static SINK: RefCell<Option<Sink>> = RefCell::new(None);
    static LEVEL: Cell<Level> = const { Cell::new(Level::Error) };
}

/// Where log lines go from now on (on this thread).
pub fn set_sink(sink: impl Fn(&str) + 'static) {
    SINK.with(|s| *s.borrow_mut() = Some(Box::new(sink)));
}

/// The most detailed level written from now on (on this thread).
pub fn set_level(level: Level) {
    LEVEL.with(|l| l.set(level));
}

pub fn enabled(level: Level) -> bool {
    level != Level::Off && level <= LEVEL.with(Cell::get)
}

fn write(line: &str) {
    SINK.with(|s| match &*s.borrow() {
        Some(sink) => sink(line),
        // Natively (tests, tools) without a sink: stderr. The Worker always sets one, and
        // leaving std's stream machinery out of its wasm saves a few KiB.
        #[cfg(not(target_arch = "wasm32"))]
        None => eprintln!("{line}"),
        #[cfg(target_arch = "wasm32")]
        None => {}
    })
}

/// A failure worth an operator's eye (storage errors, refused tokens, upstream trouble).
pub fn error(message: &str) {
    if enabled(Level::Error) {
        let line = Json::object([("level", Json::from("error")), ("message", Json::from(message))]);
        write(&line.to_string());
    }
}

/// The one line logged per request.
#[derive(Debug)]
pub struct RequestLine<'a> {
    pub level: &'static str,
    pub request_id: &'a str,
    pub method: &'a str,
    /// What was asked for: `manifest`, `blob`, `upload`, `tags`, `referrers`, `catalog`, `base`,
    /// `token`, `admin`, `ui` or `other`.
    pub route: &'static str,
    pub repository: Option<&'a str>,
    pub status: u16,
    /// Response body bytes (0 for HEAD and bodiless answers).
    pub bytes: u64,
    pub duration_ms: u64,
    /// The OCI error code of an error response.
    pub error: Option<&'a str>,
    /// At `debug` only.
    pub user_agent: Option<&'a str>,
}

/// Writes a request's line (the caller checked its level: `error` for a 5xx, else `info`).
pub fn request(mut line: RequestLine<'_>) {
    if !enabled(Level::Debug) {
        line.user_agent = None;
    }
    // Optional fields are absent rather than null: log queries test for the field.
    let json = Json::sparse(vec![
        ("level", Some(line.level.into())),
        ("requestId", Some(line.request_id.into())),
        ("method", Some(line.method.into())),
        ("route", Some(line.route.into())),
        ("repository", line.repository.map(Json::from)),
        ("status", Some(line.status.into())),
        ("bytes", Some(line.bytes.into())),
        ("durationMs", Some(line.duration_ms.into())),
        ("error", line.error.map(Json::from)),
        ("userAgent", line.user_agent.map(Json::from)),
    ]);
    write(&json.to_string());
}
