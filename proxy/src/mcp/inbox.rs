//! What one upstream connection that carries many requests (a legacy SSE event stream,
//! a stdio process's stdout) delivers, routed to whoever waits for it:
//!
//! - an answer goes to the request waiting for its id;
//! - progress goes to the relay of the request whose progress token it carries, and is
//!   dropped when no request has that token;
//! - other notifications and server-to-client requests go to the most recent request in
//!   flight that has a relay (its client is reading the answer); without one, a
//!   notification goes to every server-to-client stream the clients opened
//!   ([`Inbox::listen`]) and a request to the most recent one; without any, the message
//!   is handed back so the caller can answer a request itself (the target must not wait).
//!
//! It routes messages; it does not know about transports or client sessions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::relay::Relay;
use super::upstream::Reply;

/// The requests waiting on one upstream connection, and its listeners.
#[derive(Debug, Default)]
pub struct Inbox {
    /// Requests waiting for their answer, by id (as JSON text), with their relay.
    waiting: Mutex<Vec<Waiting>>,
    /// The server-to-client streams clients opened over this connection.
    listeners: Mutex<Vec<mpsc::UnboundedSender<Value>>>,
    closed: AtomicBool,
}

#[derive(Debug)]
struct Waiting {
    id: String,
    answer: Option<oneshot::Sender<Reply>>,
    relay: Option<Relay>,
}

impl Inbox {
    /// Registers a request waiting for the answer `id` (as JSON text); forgotten when
    /// the guard drops.
    pub fn wait(
        &self,
        id: String,
        answer: oneshot::Sender<Reply>,
        relay: Option<Relay>,
    ) -> WaitGuard<'_> {
        self.lock().push(Waiting {
            id: id.clone(),
            answer: Some(answer),
            relay,
        });
        WaitGuard { inbox: self, id }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a server-to-client stream; it is dropped once its receiver is gone.
    pub fn listen(&self, to: mpsc::UnboundedSender<Value>) {
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|l| !l.is_closed());
        listeners.push(to);
    }

    /// Hands an answer to the request waiting for it.
    pub fn answer(&self, id: &Value, reply: Reply) {
        let key = id.to_string();
        let waiter = self
            .lock()
            .iter_mut()
            .find(|w| w.id == key)
            .and_then(|w| w.answer.take());
        if let Some(w) = waiter {
            let _ = w.send(reply);
        }
    }

    /// Routes a message that is not an answer (see the module comment). Returns it
    /// back when nobody took it.
    pub fn route(&self, msg: Value) -> Option<Value> {
        let progress = msg
            .get("method")
            .is_some_and(|m| m == "notifications/progress");
        let relay = {
            let waiting = self.lock();
            if progress {
                let token = msg.pointer("/params/progressToken");
                waiting
                    .iter()
                    .filter_map(|w| w.relay.as_ref())
                    .find(|r| r.progress_token().is_some() && r.progress_token() == token)
                    .cloned()
            } else {
                waiting.iter().rev().find_map(|w| w.relay.clone())
            }
        };
        if let Some(relay) = relay {
            // Progress nobody asked for is dropped here too.
            relay.forward(msg);
            return None;
        }
        if progress {
            return None;
        }
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|l| !l.is_closed());
        if msg.get("id").is_some() {
            return match listeners.last() {
                Some(l) => l.send(msg).err().map(|e| e.0),
                None => Some(msg),
            };
        }
        if listeners.is_empty() {
            return Some(msg);
        }
        for l in listeners.iter() {
            let _ = l.send(msg.clone());
        }
        None
    }

    /// Whether the connection ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The connection ended: every waiting request fails, the listeners' streams end.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for w in self.lock().iter_mut() {
            w.answer.take();
        }
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Forgets a waiting request when dropped.
pub struct WaitGuard<'a> {
    inbox: &'a Inbox,
    id: String,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut waiting = self.inbox.lock();
        if let Some(i) = waiting.iter().position(|w| w.id == self.id) {
            waiting.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_messages_go_to_the_waiting_request_then_the_listener() {
        let shared = Inbox::default();
        let (tx, mut to_client) = mpsc::unbounded_channel();
        let relay = Relay::new("alpha".into(), Some((json!(7), json!("t"))), false, tx);
        let (answer, answered) = oneshot::channel();
        {
            let _w = shared.wait("7".into(), answer, Some(relay));
            let progress =
                json!({ "method": "notifications/progress", "params": { "progressToken": 7 } });
            assert!(shared.route(progress).is_none());
            assert!(
                shared
                    .route(json!({ "id": 3, "method": "sampling/createMessage" }))
                    .is_none()
            );
            shared.answer(&json!(7), Ok(json!({ "ok": true })));
        }
        assert_eq!(
            answered.blocking_recv().ok(),
            Some(Ok(json!({ "ok": true })))
        );
        assert_eq!(
            to_client
                .try_recv()
                .ok()
                .map(|m| m["params"]["progressToken"].clone()),
            Some(json!("t")),
            "the client's token back"
        );
        assert_eq!(
            to_client.try_recv().ok().map(|m| m["id"].clone()),
            Some(json!("alpha:3"))
        );
        // Nobody waiting and no listener: the message comes back to be answered.
        let req = json!({ "id": 4, "method": "roots/list" });
        assert_eq!(shared.route(req.clone()), Some(req.clone()));
        let (l, mut listened) = mpsc::unbounded_channel();
        shared.listen(l);
        assert!(shared.route(req.clone()).is_none());
        assert_eq!(listened.try_recv().ok(), Some(req.clone()));
        // A notification goes to every listener; a request to the latest one.
        let (l2, mut second) = mpsc::unbounded_channel();
        shared.listen(l2);
        let changed = json!({ "method": "notifications/tools/list_changed" });
        assert!(shared.route(changed.clone()).is_none());
        assert_eq!(listened.try_recv().ok(), Some(changed.clone()));
        assert_eq!(second.try_recv().ok(), Some(changed));
        assert!(shared.route(req.clone()).is_none());
        assert_eq!(second.try_recv().ok(), Some(req));
        assert!(listened.try_recv().is_err());
        shared.close();
        assert!(listened.try_recv().is_err());
        assert!(shared.is_closed());
    }
}
