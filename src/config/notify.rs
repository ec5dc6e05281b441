//! The notifications' settings (`WHARF_NOTIFY_*`; see `ops::notify`).

/// `WHARF_NOTIFY_URLS` and friends.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    /// `WHARF_NOTIFY_URLS`: comma-separated http(s) endpoints.
    pub endpoints: Vec<String>,
    /// `WHARF_NOTIFY_SECRET` (a secret): signs each body; without it bodies go unsigned.
    pub secret: Option<String>,
    /// `WHARF_NOTIFY_EVENTS`: which actions are sent, from `push`, `delete`, `pull`. Default
    /// push and delete.
    pub actions: Vec<Action>,
    /// `WHARF_NOTIFY_RETRY_SECONDS`: the first wait before a queued delivery is tried again
    /// (default 30); each later wait is as long as the delivery is old, up to 15 minutes.
    pub retry_secs: u32,
}

impl NotifyConfig {
    /// `Ok(None)` without endpoints.
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let urls = var("WHARF_NOTIFY_URLS").unwrap_or_default();
        let endpoints: Vec<String> =
            urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect();
        if endpoints.is_empty() {
            return Ok(None);
        }
        if let Some(bad) = endpoints.iter().find(|u| !u.starts_with("https://") && !u.starts_with("http://")) {
            return Err(format!("WHARF_NOTIFY_URLS: expected http(s) URLs, got \"{bad}\""));
        }
        let actions = match var("WHARF_NOTIFY_EVENTS").filter(|e| !e.trim().is_empty()) {
            None => vec![Action::Push, Action::Delete],
            Some(list) => list
                .split(',')
                .map(|a| match a.trim() {
                    "push" => Ok(Action::Push),
                    "delete" => Ok(Action::Delete),
                    "pull" => Ok(Action::Pull),
                    other => Err(format!("WHARF_NOTIFY_EVENTS: unknown event \"{other}\" (known: push, delete, pull)")),
                })
                .collect::<Result<_, _>>()?,
        };
        let retry_secs = match var("WHARF_NOTIFY_RETRY_SECONDS").filter(|v| !v.trim().is_empty()) {
            None => 30,
            Some(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|s| (1..=900).contains(s))
                .ok_or_else(|| format!("WHARF_NOTIFY_RETRY_SECONDS: expected 1 to 900 seconds, got \"{v}\""))?,
        };
        let secret = var("WHARF_NOTIFY_SECRET").filter(|s| !s.is_empty());
        Ok(Some(Self { endpoints, secret, actions, retry_secs }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Push,
    Pull,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Delete => "delete",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_needs_http_endpoints_and_known_events() {
        let from = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            NotifyConfig::from_vars(&|name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        };
        assert_eq!(from(&[]), Ok(None));
        let c = from(&[("WHARF_NOTIFY_URLS", "https://a.example/hook, http://127.0.0.1:9/x")]).unwrap().unwrap();
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.actions, [Action::Push, Action::Delete]);
        let c = from(&[("WHARF_NOTIFY_URLS", "https://a"), ("WHARF_NOTIFY_EVENTS", "pull")]).unwrap().unwrap();
        assert_eq!(c.actions, [Action::Pull]);
        assert!(from(&[("WHARF_NOTIFY_URLS", "ftp://a")]).unwrap_err().contains("WHARF_NOTIFY_URLS"));
        assert!(from(&[("WHARF_NOTIFY_URLS", "https://a"), ("WHARF_NOTIFY_EVENTS", "push,tag")]).is_err());
    }
}
