//! Messages between a target and the client outside the request/response pair: what a
//! target sends while it serves a request (progress, log messages, server-to-client
//! requests such as sampling, elicitation and roots), the client's answers to those
//! requests, and the client's cancellations.
//!
//! Id and token mapping, so every message reaches the right peer:
//! - Each request the gateway sends upstream carries an id of the gateway's own
//!   ([`next_upstream_id`], a process-wide counter), never the client's: requests of
//!   several clients sharing one upstream session (held sessions, shared stdio
//!   processes) cannot collide. [`InFlight`] maps (client session, client request id)
//!   to (target, upstream id) while the request runs, for `notifications/cancelled`.
//! - A client's `_meta.progressToken` is replaced upstream by that upstream id; progress
//!   the target reports under it is given the client's token back ([`Relay::forward`]).
//! - A server-to-client request's id becomes `"<target>:<original id as JSON>"`
//!   ([`server_request_id`]). The client's response, POSTed with that id, is sent to that
//!   target in the client's own upstream session with the original id. The id describes
//!   itself, so any replica can route the answer.
//!
//! This module maps and routes messages; it does not know about HTTP or processes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::names;

/// Where relayed messages go: the client's response stream (or GET stream).
pub type ClientStream = mpsc::UnboundedSender<Value>;

/// A fresh id for a request to a target (0 is the gateway's `initialize`).
pub fn next_upstream_id() -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    json!(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The client-facing id of request `id` sent by `target`.
pub fn server_request_id(target: &str, id: &Value) -> Value {
    json!(format!("{target}:{id}"))
}

/// The target and original id a client-facing server request id stands for.
pub fn parse_server_request_id(id: &Value) -> Option<(&str, Value)> {
    let (target, original) = id.as_str()?.split_once(':')?;
    if !names::valid_target_name(target) {
        return None;
    }
    let original: Value = serde_json::from_str(original).ok()?;
    (original.is_string() || original.is_i64() || original.is_u64()).then_some((target, original))
}

/// Takes the client's progress token out of `params` and puts `upstream_id` in its
/// place. Returns the client's token, if it gave one.
pub fn swap_progress_token(params: &mut Option<Value>, upstream_id: &Value) -> Option<Value> {
    let token = params
        .as_mut()?
        .get_mut("_meta")?
        .get_mut("progressToken")?;
    Some(std::mem::replace(token, upstream_id.clone()))
}

/// What one target sends to the client during one request (or on its GET stream),
/// mapped as the module comment says.
#[derive(Debug, Clone)]
pub struct Relay {
    target: Arc<str>,
    /// (token upstream, the client's token) for progress.
    progress: Option<(Value, Value)>,
    /// Whether resource URIs are shown prefixed (`agentmesh://<target>/...`).
    prefixed: bool,
    to: ClientStream,
}

impl Relay {
    /// A relay of `target`'s messages to `to`.
    pub fn new(
        target: Arc<str>,
        progress: Option<(Value, Value)>,
        prefixed: bool,
        to: ClientStream,
    ) -> Relay {
        Relay {
            target,
            progress,
            prefixed,
            to,
        }
    }

    /// The upstream progress token this relay takes progress for, if any.
    pub fn progress_token(&self) -> Option<&Value> {
        self.progress.as_ref().map(|(up, _)| up)
    }

    /// Passes a message from the target on to the client, mapped; responses and
    /// progress for other requests are dropped. Returns whether it was passed on.
    pub fn forward(&self, mut msg: Value) -> bool {
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        let Some(method) = method else {
            return false;
        };
        if let Some(id) = msg.get("id").cloned() {
            msg["id"] = server_request_id(&self.target, &id);
        } else if method == "notifications/progress" {
            let token = msg.pointer_mut("/params/progressToken");
            match (token, &self.progress) {
                (Some(token), Some((up, client))) if token == up => *token = client.clone(),
                _ => return false,
            }
        } else if method == "notifications/resources/updated"
            && self.prefixed
            && let Some(uri) = msg.pointer_mut("/params/uri")
            && let Some(s) = uri.as_str()
        {
            *uri = json!(names::rewrite_uri(&self.target, s));
        }
        self.to.send(msg).is_ok()
    }
}

/// Input requests of 2026-07-28 targets (elicitation, sampling, roots inside an
/// `input_required` result) put to a client of the session style as server requests:
/// the request that asks waits here for the client's response, by the id the client
/// sees (`"<target>:\"input-<n>\""`, a server request id of the usual form). The
/// waiting request runs in this process, so the client's answer must reach it here.
#[derive(Debug, Default)]
pub struct Asking {
    next: AtomicU64,
    waiting: Mutex<HashMap<String, oneshot::Sender<Value>>>,
}

/// A question put to a client: the id it was sent under and where its answer arrives.
/// Dropping it forgets the question.
pub struct Question<'a> {
    table: &'a Asking,
    key: String,
    /// The id the client sees.
    pub id: Value,
    /// The client's whole response message.
    pub answer: oneshot::Receiver<Value>,
}

impl Asking {
    /// A new question on behalf of `target`.
    pub fn ask(&self, target: &str) -> Question<'_> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = server_request_id(target, &json!(format!("input-{n}")));
        let key = id.as_str().unwrap_or_default().to_owned();
        let (tx, rx) = oneshot::channel();
        self.lock().insert(key.clone(), tx);
        Question {
            table: self,
            key,
            id,
            answer: rx,
        }
    }

    /// Delivers a client's response to the question it answers; gives the message back
    /// when no question here has that id.
    pub fn answer(&self, id: &Value, message: Value) -> Result<(), Value> {
        let waiting = id.as_str().and_then(|k| self.lock().remove(k));
        match waiting {
            // A question whose request went away takes no answer: dropped.
            Some(tx) => {
                let _ = tx.send(message);
                Ok(())
            }
            None => Err(message),
        }
    }

    /// Whether `id` is a question waiting here.
    pub fn is_waiting(&self, id: &Value) -> bool {
        id.as_str().is_some_and(|k| self.lock().contains_key(k))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Value>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Question<'_> {
    fn drop(&mut self) {
        self.table.lock().remove(&self.key);
    }
}

/// Requests in flight, by client session and client request id: where a
/// `notifications/cancelled` goes.
#[derive(Debug, Default)]
pub struct InFlight {
    requests: Mutex<Requests>,
}

/// (client session, client request id as JSON) → (target, upstream id) of each upstream
/// request serving it.
type Requests = HashMap<(String, String), Vec<(Arc<str>, Value)>>;

/// Removes its entry from [`InFlight`] when the upstream request ends.
pub struct InFlightGuard<'a> {
    table: &'a InFlight,
    key: (String, String),
    upstream_id: Value,
}

impl InFlight {
    /// Records that client request `client_id` of session `session` runs on `target`
    /// as `upstream_id`, until the guard is dropped.
    pub fn begin<'a>(
        &'a self,
        session: &str,
        client_id: &Value,
        target: &Arc<str>,
        upstream_id: &Value,
    ) -> InFlightGuard<'a> {
        let key = (session.to_owned(), client_id.to_string());
        self.lock()
            .entry(key.clone())
            .or_default()
            .push((target.clone(), upstream_id.clone()));
        InFlightGuard {
            table: self,
            key,
            upstream_id: upstream_id.clone(),
        }
    }

    /// The upstream requests running for client request `client_id` of `session`.
    pub fn find(&self, session: &str, client_id: &Value) -> Vec<(Arc<str>, Value)> {
        self.lock()
            .get(&(session.to_owned(), client_id.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let mut requests = self.table.lock();
        if let Some(list) = requests.get_mut(&self.key) {
            list.retain(|(_, id)| *id != self.upstream_id);
            if list.is_empty() {
                requests.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_request_ids_round_trip_and_foreign_ids_are_refused() {
        for original in [json!(0), json!("abc:def"), json!(42)] {
            let id = server_request_id("alpha", &original);
            assert_eq!(parse_server_request_id(&id), Some(("alpha", original)));
        }
        for foreign in [json!(3), json!("nocolon"), json!("Bad!:1"), json!("a:{}")] {
            assert_eq!(parse_server_request_id(&foreign), None, "{foreign}");
        }
    }

    #[test]
    fn progress_gets_the_client_token_back_and_requests_a_mapped_id() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut params = Some(json!({ "name": "x", "_meta": { "progressToken": "client-t" } }));
        let client = swap_progress_token(&mut params, &json!(7));
        assert_eq!(
            params,
            Some(json!({ "name": "x", "_meta": { "progressToken": 7 } }))
        );
        let relay = Relay::new("alpha".into(), client.map(|c| (json!(7), c)), false, tx);
        let progress = |t: Value| json!({ "method": "notifications/progress", "params": { "progressToken": t, "progress": 1 } });
        assert!(relay.forward(progress(json!(7))));
        assert!(
            !relay.forward(progress(json!(8))),
            "another request's progress"
        );
        assert!(
            !relay.forward(json!({ "id": 1, "result": {} })),
            "a response"
        );
        assert!(relay.forward(json!({ "id": 0, "method": "elicitation/create" })));
        assert_eq!(
            rx.try_recv()
                .ok()
                .and_then(|m| m.pointer("/params/progressToken").cloned()),
            Some(json!("client-t"))
        );
        assert_eq!(
            rx.try_recv().ok().map(|m| m["id"].clone()),
            Some(json!("alpha:0"))
        );
    }

    #[test]
    fn in_flight_requests_are_found_until_they_end() {
        let t = InFlight::default();
        let target: Arc<str> = "alpha".into();
        {
            let _g = t.begin("s", &json!(3), &target, &json!(11));
            assert_eq!(t.find("s", &json!(3)), vec![(target.clone(), json!(11))]);
            assert!(t.find("s", &json!("3")).is_empty());
        }
        assert!(t.find("s", &json!(3)).is_empty());
    }
}
