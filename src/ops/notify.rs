//! Notifications: on push, delete and (optionally) pull, a JSON event in Distribution's envelope
//! (`{"events":[...]}`, notifications/event.go) POSTed to each configured endpoint, signed with
//! an HMAC of the body. A failing endpoint never slows or fails the request that caused the
//! event.
//!
//! With the queue bound (`NOTIFY` in wrangler.toml), each request hands one delivery per
//! endpoint to it after the response, and the queue's consumer sends them
//! ([`Registry::deliver_queued`]): a delivery that fails is tried again later, each wait as long
//! as the delivery is old (from `WHARF_NOTIFY_RETRY_SECONDS` up to 15 minutes), for as many tries
//! as the queue allows (`max_retries`: 20, about four hours), then it goes to the dead-letter
//! queue. So an endpoint that is down for an hour still gets every event. Without the queue,
//! deliveries are sent after the response (`waitUntil`), tried three times within 2.5 s.
//!
//! What is notified: manifests pushed (one event per tag, or one without a tag for a push by
//! digest), manifests and tags deleted, blobs deleted, and with `pull` manifests pulled (GET, not
//! HEAD). Blob uploads are not: the manifest push that follows them is.

use crate::registry::Registry;
use crate::registry::events::Target;
use crate::registry::host::{Delivery, Notifier};
use crate::storage::{KeyValueStore, ObjectStore};
use futures_util::future::join_all;
use hmac::{KeyInit, Mac};
use serde::Serialize;

/// Media type of the envelope (Distribution's `EventsMediaType`).
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v2+json";

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>` keyed by `WHARF_NOTIFY_SECRET`.
pub const SIGNATURE_HEADER: &str = "X-Wharf-Signature-256";

/// What the queue's consumer does with a delivery after one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered: acknowledge it.
    Delivered,
    /// Try again after this many seconds.
    RetryAfter(u32),
}

/// The longest wait between two tries of a queued delivery.
const MAX_RETRY_SECS: u32 = 15 * 60;

/// Without a queue: tries per endpoint and event, and the pause before each retry, bounded well
/// inside the time `waitUntil` leaves after a response.
const ATTEMPTS: usize = 3;
const BACKOFF_MS: [u64; ATTEMPTS - 1] = [500, 2000];

/// The request behind an event (Distribution's `RequestRecord`; no address: a Worker sees the
/// client's only through headers it cannot trust).
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub id: String,
    pub host: String,
    pub method: String,
    pub useragent: String,
}

/// The envelope POSTed to each endpoint (Distribution's `Envelope`).
#[derive(Serialize)]
struct Envelope<'a> {
    events: Vec<Event<'a>>,
}

/// One event (Distribution's `Event`).
#[derive(Serialize)]
struct Event<'a> {
    id: String,
    timestamp: &'a str,
    action: &'static str,
    target: &'a Target,
    request: &'a RequestRecord,
    actor: Actor<'a>,
    source: Source<'a>,
}

/// Who caused the event: the user, when one signed in.
#[derive(Serialize)]
struct Actor<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// Which registry sent it.
#[derive(Serialize)]
struct Source<'a> {
    addr: &'a str,
    #[serde(rename = "instanceID")]
    instance_id: &'static str,
}

/// `sha256=<hex>`: HMAC-SHA256 of `body` keyed by `secret`, for [`SIGNATURE_HEADER`].
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// The envelope of the events the request recorded, for delivery after the response.
    pub(crate) fn take_events(&self, request: &RequestRecord, actor: Option<&str>) -> Option<Vec<u8>> {
        let mut recorded = std::mem::take(&mut *self.events.borrow_mut());
        if recorded.is_empty() {
            return None;
        }
        // URLs are recorded as paths; the event carries them whole.
        for (_, target) in &mut recorded {
            target.url = target.url.take().map(|path| format!("{}{path}", request.host));
        }
        let timestamp = crate::base::time::rfc3339_millis(self.now_ms());
        let events = recorded.iter().enumerate().map(|(i, (action, target))| Event {
            id: format!("{}-{i}", request.id),
            timestamp: &timestamp,
            action: action.as_str(),
            target,
            request,
            actor: Actor { name: actor },
            source: Source { addr: &request.host, instance_id: "wharf" },
        });
        // Strings and integers: the envelope always serialises.
        serde_json::to_vec(&Envelope { events: events.collect() }).ok()
    }

    /// Hands an envelope to the queue, one delivery per endpoint; without a queue, or when the
    /// queue refuses it, sends it to every endpoint, side by side, each with bounded retries.
    /// Failures are logged, never returned.
    pub(crate) async fn deliver(&self, body: Vec<u8>) {
        let (Some(config), Some(notifier)) = (&self.config.notify, &self.notifier) else { return };
        let envelope = String::from_utf8_lossy(&body).into_owned();
        let deliveries = config.endpoints.iter().map(|e| Delivery { endpoint: e.clone(), envelope: envelope.clone() });
        if let Some(enqueued) = notifier.enqueue(deliveries.collect()) {
            match enqueued.await {
                Ok(()) => return,
                Err(e) => crate::base::log::error(&format!("notifications: the queue refused them ({e}); sending now")),
            }
        }
        let headers = self.notification_headers(&body);
        join_all(config.endpoints.iter().map(|url| send(notifier.as_ref(), url, &headers, &body))).await;
    }

    /// The queue consumer's one try of a delivery `age_secs` old: delivered, or when to try
    /// again. The queue itself counts the tries, and moves a delivery that used them all to the
    /// dead-letter queue.
    pub async fn deliver_queued(&self, delivery: &Delivery, age_secs: u64) -> Outcome {
        let (Some(config), Some(notifier)) = (&self.config.notify, &self.notifier) else { return Outcome::Delivered };
        let body = delivery.envelope.as_bytes().to_vec();
        let headers = self.notification_headers(&body);
        let failure = match notifier.post(&delivery.endpoint, headers, body).await {
            Ok(status) if (200..300).contains(&status) => return Outcome::Delivered,
            Ok(status) => format!("status {status}"),
            Err(e) => e,
        };
        let wait =
            u32::try_from(age_secs).unwrap_or(u32::MAX).clamp(config.retry_secs, MAX_RETRY_SECS.max(config.retry_secs));
        let host = host_of(&delivery.endpoint);
        crate::base::log::error(&format!("notification to {host} failed ({failure}); tried again in {wait} s"));
        Outcome::RetryAfter(wait)
    }

    /// Content type, and the signature when a secret is set.
    fn notification_headers(&self, body: &[u8]) -> Vec<(&'static str, String)> {
        let mut headers = vec![("Content-Type", EVENTS_MEDIA_TYPE.to_owned())];
        if let Some(secret) = self.config.notify.as_ref().and_then(|c| c.secret.as_ref()) {
            headers.push((SIGNATURE_HEADER, signature(secret, body)));
        }
        headers
    }
}

/// One endpoint, with bounded retries on errors and non-2xx answers.
async fn send(notifier: &dyn Notifier, url: &str, headers: &[(&'static str, String)], body: &[u8]) {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            notifier.sleep(BACKOFF_MS[attempt - 1]).await;
        }
        match notifier.post(url, headers.to_vec(), body.to_vec()).await {
            Ok(status) if (200..300).contains(&status) => return,
            Ok(status) => last = format!("status {status}"),
            Err(e) => last = e,
        }
    }
    crate::base::log::error(&format!("notification to {} failed after {ATTEMPTS} attempts: {last}", host_of(url)));
}

/// The host of an endpoint, for logs: webhook URLs often carry a token in their path or query,
/// or credentials before the host.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.rsplit_once('@').map_or(authority, |(_, host)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_logged_by_host_only() {
        assert_eq!(host_of("https://user:pw@hooks.example:8443/t/SECRET?token=x"), "hooks.example:8443");
        assert_eq!(host_of("http://127.0.0.1:9/hook"), "127.0.0.1:9");
    }

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        let s = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(s, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
