//! Structured logs: one JSON object per line, for `wrangler tail` and Workers Logs. The core
//! writes through a sink the host installs (the Worker points it at `console.log`); natively it
//! goes to stderr. Nothing secret is ever logged: no header values, no query strings, only the
//! kind of route and the repository.

use serde::Serialize;
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
        write(&to_line(&ErrorLine { level: "error", message }));
    }
}

/// A line of progress at level `info` (a step of garbage collection): `line` serialises to a
/// JSON object whose first field is `"level":"info"`.
pub fn info(line: &impl Serialize) {
    if enabled(Level::Info) {
        write(&to_line(line));
    }
}

/// A line as JSON. The formats logged are structs of strings and integers, which always
/// serialise.
fn to_line(line: &impl Serialize) -> String {
    serde_json::to_string(line).unwrap_or_default()
}

/// `{"level":"error","message"}`; the level first, where the Worker's sink looks for it.
#[derive(Serialize)]
struct ErrorLine<'a> {
    level: &'static str,
    message: &'a str,
}

/// The one line logged per request. Optional fields are absent rather than null: log queries
/// test for the field.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestLine<'a> {
    pub level: &'static str,
    pub request_id: &'a str,
    pub method: &'a str,
    /// What was asked for: `manifest`, `blob`, `upload`, `tags`, `referrers`, `catalog`, `base`,
    /// `token`, `admin`, `ui` or `other`.
    pub route: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<&'a str>,
    pub status: u16,
    /// Response body bytes (0 for HEAD and bodiless answers).
    pub bytes: u64,
    pub duration_ms: u64,
    /// The OCI error code of an error response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// At `debug` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<&'a str>,
}

/// Writes a request's line (the caller checked its level: `error` for a 5xx, else `info`).
pub fn request(mut line: RequestLine<'_>) {
    if !enabled(Level::Debug) {
        line.user_agent = None;
    }
    write(&to_line(&line));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn lines_are_compact_json_with_the_level_first_and_absent_fields_left_out() {
        let lines = Rc::new(RefCell::new(Vec::new()));
        let sink = lines.clone();
        set_sink(move |line| sink.borrow_mut().push(line.to_owned()));
        set_level(Level::Info);
        error("disk \"full\"");
        request(RequestLine {
            level: "info",
            request_id: "r1",
            method: "GET",
            route: "tags",
            repository: Some("a/b"),
            status: 200,
            bytes: 12,
            duration_ms: 3,
            error: None,
            user_agent: Some("at debug only"),
        });
        assert_eq!(
            *lines.borrow(),
            [
                r#"{"level":"error","message":"disk \"full\""}"#,
                r#"{"level":"info","requestId":"r1","method":"GET","route":"tags","repository":"a/b","status":200,"bytes":12,"durationMs":3}"#,
            ]
        );
    }
}
