//! A fake Kubernetes API server, written for these tests (no API server can run on our
//! machines, see ../shared/TESTING.md): a hyper HTTP server on loopback that speaks the
//! API's wire protocol for what the controller uses, with real JSON.
//!
//! - `GET` list (`/api/v1/pods`, `/apis/<group>/<version>/<plural>`) answers a `List`
//!   with a `resourceVersion`; with `?watch=true` it streams watch events (one JSON
//!   object per line) from the requested `resourceVersion` on, as the API server does.
//! - A kind registered as absent answers 404, like a CRD that is not installed.
//! - `PATCH …/<name>/status` (JSON merge patch) is recorded, checked against the
//!   `resourceVersion` it carries (409 on a stale one), applied to the object's status
//!   and announced to watchers as `MODIFIED`.
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews` is recorded and answered from the
//!   tokens the test registered (user, audiences), intersecting audiences as the API
//!   server does.
//! - `PATCH …/<name>` with `application/apply-patch+yaml` (server-side apply) is recorded
//!   and stores the object; discovery (`GET /apis/<group>/<version>`) lists the kinds the
//!   test declared with [`FakeApi::discoverable`].
//! - `GET …/<name>` reads one object; `POST` to a collection creates one (409 when it
//!   exists); `PUT …/<name>` replaces one, checked against the `resourceVersion` it
//!   carries (409 on a stale one), as leader election's Lease updates need.
//! - `PATCH …/<name>` with `application/json-patch+json` (RFC 6902: `test`, `add`,
//!   `replace`, `remove`) is recorded and applied to the object, all or nothing: a failed
//!   `test` or a path that is not there answers 422, as the API server does.
//! - Every request must carry the controller's bearer token (401 otherwise).
//! - Label and field selectors are not applied: a list or watch returns the whole
//!   collection, so the code under test must (and does) check names and labels itself.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// The token the controller's kubeconfig carries.
pub const CONTROLLER_TOKEN: &str = "controller-token-for-the-fake-api";

/// A request the fake recorded.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Path and query.
    pub uri: String,
    /// `content-type`.
    pub content_type: String,
    /// The JSON body.
    pub body: Value,
}

/// What a test registers about a service-account token.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// `status.user` of a successful review.
    pub user: Value,
    /// Audiences the token was issued for.
    pub audiences: Vec<String>,
}

#[derive(Default)]
struct State {
    /// Objects by collection (`apis/gateway.networking.k8s.io/v1/httproutes`), then
    /// `(namespace, name)`.
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    /// Collections that answer 404.
    absent: HashSet<String>,
    /// Every watch event so far: (collection, resourceVersion, event).
    history: Vec<(String, u64, Value)>,
    resource_version: u64,
    patches: Vec<Recorded>,
    applies: Vec<Recorded>,
    json_patches: Vec<Recorded>,
    reviews: Vec<Recorded>,
    /// Discovery: group/version → (kind, plural, namespaced).
    discovery: BTreeMap<String, Vec<(String, String, bool)>>,
    tokens: HashMap<String, TokenInfo>,
    unauthorized: usize,
}

/// The fake API server.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<(String, u64, Value)>,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// The collection an object of `api_version`/`kind` lives in, and its plural.
fn collection(api_version: &str, kind: &str) -> String {
    let plural = match kind {
        "GatewayClass" => "gatewayclasses".to_string(),
        "Gateway" => "gateways".into(),
        "HTTPRoute" => "httproutes".into(),
        "GRPCRoute" => "grpcroutes".into(),
        "TLSRoute" => "tlsroutes".into(),
        "TCPRoute" => "tcproutes".into(),
        "ReferenceGrant" => "referencegrants".into(),
        "AgentBackend" => "agentbackends".into(),
        "AgentPolicy" => "agentpolicies".into(),
        other => format!("{}s", other.to_ascii_lowercase()),
    };
    if api_version.contains('/') {
        format!("apis/{api_version}/{plural}")
    } else {
        format!("api/{api_version}/{plural}")
    }
}

/// What a request path names.
struct Target {
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => (format!("api/{version}"), rest),
        ["apis", group, version, rest @ ..] => (format!("apis/{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] => {
            (Some(ns.to_string()), [&[*plural], tail].concat())
        }
        other => (None, other.to_vec()),
    };
    let plural = rest.first()?;
    Some(Target {
        collection: format!("{prefix}/{plural}"),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn query(uri: &hyper::Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .unwrap()
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().unwrap();
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

impl FakeApi {
    /// Starts the fake on a loopback port.
    pub async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events, _) = broadcast::channel(1024);
        let fake = FakeApi {
            state: Arc::new(Mutex::new(State::default())),
            events,
            addr,
        };
        let server = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let fake = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let fake = fake.clone();
                        async move { Ok::<_, Infallible>(fake.handle(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        fake
    }

    /// Writes a kubeconfig for the fake (bearer token [`CONTROLLER_TOKEN`]) to `path`.
    pub fn write_kubeconfig(&self, path: &Path) {
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: http://{}
users:
- name: controller
  user:
    token: {CONTROLLER_TOKEN}
contexts:
- name: fake
  context:
    cluster: fake
    user: controller
current-context: fake
",
            self.addr
        );
        std::fs::write(path, text).unwrap();
    }

    /// Makes the collection of `api_version`/`kind` answer 404 (CRD not installed).
    pub fn absent(&self, api_version: &str, kind: &str) {
        let mut state = self.state.lock().unwrap();
        state.absent.insert(collection(api_version, kind));
    }

    /// Lists `kind` in the discovery document of `api_version`.
    pub fn discoverable(&self, api_version: &str, kind: &str, namespaced: bool) {
        let plural = collection(api_version, kind)
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        self.state
            .lock()
            .unwrap()
            .discovery
            .entry(api_version.to_owned())
            .or_default()
            .push((kind.to_owned(), plural, namespaced));
    }

    /// Every server-side apply received so far.
    pub fn applies(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().applies.clone()
    }

    /// Registers a service-account token.
    pub fn token(&self, token: &str, info: TokenInfo) {
        self.state.lock().unwrap().tokens.insert(token.into(), info);
    }

    /// Creates or replaces an object (as `kubectl apply` would: `generation` grows when
    /// the spec changes; `status` is kept unless the object carries one).
    pub fn apply(&self, mut object: Value) {
        let mut state = self.state.lock().unwrap();
        let api_version = object["apiVersion"].as_str().unwrap().to_owned();
        let kind = object["kind"].as_str().unwrap().to_owned();
        let key = collection(&api_version, &kind);
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        state.resource_version += 1;
        let rv = state.resource_version;
        let previous = state
            .objects
            .get(&key)
            .and_then(|c| c.get(&(namespace.clone(), name.clone())))
            .cloned();
        let generation = match &previous {
            Some(p) if p["spec"] == object["spec"] => p["metadata"]["generation"].as_i64().unwrap(),
            Some(p) => p["metadata"]["generation"].as_i64().unwrap() + 1,
            None => 1,
        };
        let meta = object["metadata"].as_object_mut().unwrap();
        meta.insert("resourceVersion".into(), rv.to_string().into());
        meta.insert("generation".into(), generation.into());
        meta.entry("uid").or_insert_with(|| {
            format!("uid-{kind}-{namespace}-{name}")
                .to_lowercase()
                .into()
        });
        meta.entry("creationTimestamp")
            .or_insert_with(|| "2026-01-01T00:00:00Z".into());
        if object.get("status").is_none()
            && let Some(status) = previous.as_ref().and_then(|p| p.get("status"))
        {
            object["status"] = status.clone();
        }
        let event_type = if previous.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state
            .objects
            .entry(key.clone())
            .or_default()
            .insert((namespace, name), object.clone());
        let event = json!({ "type": event_type, "object": object });
        state.history.push((key.clone(), rv, event.clone()));
        let _ = self.events.send((key, rv, event));
    }

    /// Deletes an object (as `kubectl delete` would), announcing it to watchers as
    /// `DELETED`; false when there was none.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let mut state = self.state.lock().unwrap();
        let key = collection(api_version, kind);
        let Some(mut object) = state
            .objects
            .get_mut(&key)
            .and_then(|c| c.remove(&(namespace.to_owned(), name.to_owned())))
        else {
            return false;
        };
        state.resource_version += 1;
        let rv = state.resource_version;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        let event = json!({ "type": "DELETED", "object": object });
        state.history.push((key.clone(), rv, event.clone()));
        let _ = self.events.send((key, rv, event));
        true
    }

    /// The object as stored now.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let state = self.state.lock().unwrap();
        state
            .objects
            .get(&collection(api_version, kind))?
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every status PATCH received so far.
    pub fn patches(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().patches.clone()
    }

    /// Every JSON patch (RFC 6902) of an object received so far.
    pub fn json_patches(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().json_patches.clone()
    }

    /// Every TokenReview POST received so far.
    pub fn reviews(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().reviews.clone()
    }

    /// How many requests came without the controller's token.
    pub fn unauthorized(&self) -> usize {
        self.state.lock().unwrap().unauthorized
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let authorized = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {CONTROLLER_TOKEN}"));
        if !authorized {
            self.state.lock().unwrap().unauthorized += 1;
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
        let method = req.method().clone();
        let uri = req.uri().clone();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        let body: Value = body
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let recorded = Recorded {
            uri: uri.to_string(),
            content_type,
            body,
        };
        if method == hyper::Method::POST
            && uri.path() == "/apis/authentication.k8s.io/v1/tokenreviews"
        {
            return self.token_review(recorded);
        }
        if method == hyper::Method::GET
            && let Some(response) = self.discovery(uri.path())
        {
            return response;
        }
        let Some(target) = parse_path(uri.path()) else {
            return status(StatusCode::NOT_FOUND, "NotFound", "no such path");
        };
        if self
            .state
            .lock()
            .unwrap()
            .absent
            .contains(&target.collection)
        {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        match (method, &target.name, target.subresource.as_deref()) {
            (hyper::Method::GET, None, None) => {
                if query(&uri, "watch").is_some_and(|w| w == "true" || w == "1") {
                    self.watch(target, &uri)
                } else {
                    self.list(&target)
                }
            }
            (hyper::Method::GET, Some(name), None) => {
                let state = self.state.lock().unwrap();
                let key = (target.namespace.clone().unwrap_or_default(), name.clone());
                match state
                    .objects
                    .get(&target.collection)
                    .and_then(|c| c.get(&key))
                {
                    Some(object) => json_response(StatusCode::OK, object),
                    None => status(StatusCode::NOT_FOUND, "NotFound", "no such object"),
                }
            }
            (hyper::Method::POST, None, None) => self.create_or_replace(target, recorded, true),
            (hyper::Method::PUT, Some(_), None) => self.create_or_replace(target, recorded, false),
            (hyper::Method::PATCH, Some(_), Some("status")) => self.patch_status(target, recorded),
            (hyper::Method::PATCH, Some(_), None)
                if recorded.content_type == "application/json-patch+json" =>
            {
                self.json_patch(target, recorded)
            }
            (hyper::Method::PATCH, Some(_), None) => self.server_side_apply(recorded),
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the fake API server does not implement this request",
            ),
        }
    }

    /// `GET /api/v1` or `/apis/<group>/<version>`: an APIResourceList of the declared kinds.
    fn discovery(&self, path: &str) -> Option<Response<Body>> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let group_version = match segments.as_slice() {
            ["api", version] => (*version).to_owned(),
            ["apis", group, version] => format!("{group}/{version}"),
            _ => return None,
        };
        let state = self.state.lock().unwrap();
        let kinds = state.discovery.get(&group_version)?;
        let resources: Vec<Value> = kinds
            .iter()
            .map(|(kind, plural, namespaced)| {
                json!({
                    "name": plural, "singularName": kind.to_ascii_lowercase(),
                    "namespaced": namespaced, "kind": kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                })
            })
            .collect();
        Some(json_response(
            StatusCode::OK,
            &json!({
                "kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": group_version, "resources": resources,
            }),
        ))
    }

    /// A server-side apply: recorded, and the object stored as sent (the fake does not
    /// merge field ownership).
    fn server_side_apply(&self, recorded: Recorded) -> Response<Body> {
        self.state.lock().unwrap().applies.push(recorded.clone());
        if recorded.content_type != "application/apply-patch+yaml" {
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "the fake API server takes only server-side apply on objects",
            );
        }
        self.apply(recorded.body.clone());
        let object = &recorded.body;
        let stored = self
            .get(
                object["apiVersion"].as_str().unwrap_or_default(),
                object["kind"].as_str().unwrap_or_default(),
                object["metadata"]["namespace"].as_str().unwrap_or_default(),
                object["metadata"]["name"].as_str().unwrap_or_default(),
            )
            .unwrap();
        json_response(StatusCode::OK, &stored)
    }

    /// `POST` (`create`) or `PUT`: stores the object sent, as the API server would
    /// (resourceVersion, generation), refusing a create of an existing object and a
    /// replace from a stale resourceVersion with 409.
    fn create_or_replace(
        &self,
        target: Target,
        recorded: Recorded,
        create: bool,
    ) -> Response<Body> {
        let object = recorded.body;
        let namespace = target
            .namespace
            .clone()
            .or_else(|| object["metadata"]["namespace"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        {
            let state = self.state.lock().unwrap();
            let held = state
                .objects
                .get(&target.collection)
                .and_then(|c| c.get(&(namespace.clone(), name.clone())));
            match (create, held) {
                (true, Some(_)) => {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        "the object already exists",
                    );
                }
                (false, None) => {
                    return status(StatusCode::NOT_FOUND, "NotFound", "no such object");
                }
                (false, Some(held))
                    if held["metadata"]["resourceVersion"]
                        != object["metadata"]["resourceVersion"] =>
                {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
                _ => {}
            }
        }
        let mut object = object;
        object["metadata"]["namespace"] = namespace.clone().into();
        let (api_version, kind) = (
            object["apiVersion"].as_str().unwrap_or_default().to_owned(),
            object["kind"].as_str().unwrap_or_default().to_owned(),
        );
        self.apply(object);
        let stored = self.get(&api_version, &kind, &namespace, &name).unwrap();
        let code = if create {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        json_response(code, &stored)
    }

    fn list(&self, target: &Target) -> Response<Body> {
        let state = self.state.lock().unwrap();
        let items: Vec<Value> = state
            .objects
            .get(&target.collection)
            .into_iter()
            .flat_map(|c| c.values())
            .filter(|o| {
                target
                    .namespace
                    .as_ref()
                    .is_none_or(|ns| o["metadata"]["namespace"] == ns.as_str())
            })
            .cloned()
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "apiVersion": "v1",
                "kind": "List",
                "metadata": { "resourceVersion": state.resource_version.to_string() },
                "items": items,
            }),
        )
    }

    /// Streams the events of the collection after the requested resourceVersion, then
    /// every new one, until the client goes away.
    fn watch(&self, target: Target, uri: &hyper::Uri) -> Response<Body> {
        let since: u64 = query(uri, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Subscribe before reading the history, so that no event falls in between.
        let mut live = self.events.subscribe();
        let backlog: Vec<(u64, Value)> = self
            .state
            .lock()
            .unwrap()
            .history
            .iter()
            .filter(|(c, rv, _)| *c == target.collection && *rv > since)
            .map(|(_, rv, e)| (*rv, e.clone()))
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let collection = target.collection;
        tokio::spawn(async move {
            let mut sent = since;
            for (rv, event) in backlog {
                sent = rv;
                if tx.send(Bytes::from(format!("{event}\n"))).await.is_err() {
                    return;
                }
            }
            loop {
                let (c, rv, event) = match live.recv().await {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if c != collection || rv <= sent {
                    continue;
                }
                sent = rv;
                if tx.send(Bytes::from(format!("{event}\n"))).await.is_err() {
                    return;
                }
            }
        });
        let frames = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|b| Ok::<_, Infallible>(Frame::data(b)));
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .unwrap()
    }

    fn patch_status(&self, target: Target, recorded: Recorded) -> Response<Body> {
        let mut state = self.state.lock().unwrap();
        state.patches.push(recorded.clone());
        if recorded.content_type != "application/merge-patch+json" {
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "the fake API server takes merge patches on status",
            );
        }
        let key = (
            target.namespace.clone().unwrap_or_default(),
            target.name.clone().unwrap_or_default(),
        );
        let Some(mut object) = state
            .objects
            .get(&target.collection)
            .and_then(|c| c.get(&key))
            .cloned()
        else {
            return status(StatusCode::NOT_FOUND, "NotFound", "no such object");
        };
        if let Some(wanted) = recorded.body["metadata"]["resourceVersion"].as_str()
            && object["metadata"]["resourceVersion"] != wanted
        {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            );
        }
        // The status subresource changes only the status.
        merge(&mut object["status"], &recorded.body["status"]);
        state.resource_version += 1;
        let rv = state.resource_version;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        state
            .objects
            .get_mut(&target.collection)
            .unwrap()
            .insert(key, object.clone());
        let event = json!({ "type": "MODIFIED", "object": object });
        state
            .history
            .push((target.collection.clone(), rv, event.clone()));
        let _ = self.events.send((target.collection, rv, event));
        json_response(StatusCode::OK, &object)
    }

    /// A JSON patch of an object: applied all or nothing, stored, announced.
    fn json_patch(&self, target: Target, recorded: Recorded) -> Response<Body> {
        let key = (
            target.namespace.clone().unwrap_or_default(),
            target.name.clone().unwrap_or_default(),
        );
        let object = {
            let mut state = self.state.lock().unwrap();
            state.json_patches.push(recorded.clone());
            state
                .objects
                .get(&target.collection)
                .and_then(|c| c.get(&key))
                .cloned()
        };
        let Some(mut object) = object else {
            return status(StatusCode::NOT_FOUND, "NotFound", "no such object");
        };
        for operation in recorded.body.as_array().into_iter().flatten() {
            if let Err(message) = json_patch_operation(&mut object, operation) {
                return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &message);
            }
        }
        // Stored as a replace would store it (a new resourceVersion, a MODIFIED event).
        self.apply(object);
        let stored = self.state.lock().unwrap().objects[&target.collection][&key].clone();
        json_response(StatusCode::OK, &stored)
    }

    fn token_review(&self, recorded: Recorded) -> Response<Body> {
        let mut state = self.state.lock().unwrap();
        state.reviews.push(recorded.clone());
        let token = recorded.body["spec"]["token"].as_str().unwrap_or_default();
        let wanted: Vec<String> = recorded.body["spec"]["audiences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        let status = match state.tokens.get(token) {
            None => json!({ "authenticated": false, "error": "invalid bearer token" }),
            Some(info) => {
                let common: Vec<&String> = if wanted.is_empty() {
                    info.audiences.iter().collect()
                } else {
                    wanted
                        .iter()
                        .filter(|a| info.audiences.contains(a))
                        .collect()
                };
                if common.is_empty() {
                    json!({
                        "authenticated": false,
                        "error": format!("token audiences {:?} is invalid for the target audiences {wanted:?}", info.audiences),
                    })
                } else {
                    json!({ "authenticated": true, "user": info.user, "audiences": common })
                }
            }
        };
        json_response(
            StatusCode::CREATED,
            &json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "metadata": {},
                "spec": recorded.body["spec"],
                "status": status,
            }),
        )
    }
}

/// Applies one RFC 6902 operation (`test`, `add`, `replace`, `remove`) to `object`.
fn json_patch_operation(object: &mut Value, operation: &Value) -> Result<(), String> {
    let path = operation["path"].as_str().unwrap_or_default();
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("bad path {path:?}"))?;
    let op = operation["op"].as_str().unwrap_or_default();
    if op == "test" {
        return match object.pointer(path) {
            Some(v) if *v == operation["value"] => Ok(()),
            other => Err(format!("test of {path} failed: found {other:?}")),
        };
    }
    let container = object
        .pointer_mut(parent)
        .ok_or_else(|| format!("no {parent:?} to patch"))?;
    let map = container
        .as_object_mut()
        .ok_or_else(|| format!("{parent:?} is not an object (the fake patches only objects)"))?;
    match op {
        "add" => {
            map.insert(last.to_owned(), operation["value"].clone());
        }
        "replace" | "remove" if !map.contains_key(last) => {
            return Err(format!("no {path:?} to {op}"));
        }
        "replace" => {
            map.insert(last.to_owned(), operation["value"].clone());
        }
        "remove" => {
            map.remove(last);
        }
        other => return Err(format!("the fake does not implement op {other:?}")),
    }
    Ok(())
}
