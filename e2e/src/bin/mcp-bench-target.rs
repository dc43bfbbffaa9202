//! A fast streamable-HTTP MCP server for benchmarks: a test double, written here because
//! the SDK servers we can run (Python FastMCP, the TypeScript SDK) spend hundreds of
//! microseconds to milliseconds per request, which would drown the gateway's own cost.
//!
//! Usage: `mcp-bench-target PORT [TOOLS] [NAME] [LIST_DELAY_MS]` (TOOLS defaults to 20,
//! NAME to "bench", LIST_DELAY_MS to 0). Listens on 127.0.0.1:PORT and serves MCP on
//! every path (`/mcp` by convention; a proxy route need not rewrite), HTTP/1.1
//! keep-alive, one thread.
//!
//! It speaks the session style of the protocol (2024-11-05 … 2025-11-25), enough for a
//! client or a gateway to use it for real:
//! - `initialize`: negotiates the version (the client's if supported, else the latest),
//!   offers `tools`, and issues an `Mcp-Session-Id` (`s<number>`); every other request
//!   must carry an id it issued (404 otherwise, as the spec says for unknown sessions).
//! - `tools/list`: TOOLS tools `tool00`, `tool01`, … with an input schema, answered
//!   after LIST_DELAY_MS milliseconds (a server farther away, or slower to list; the
//!   wait costs no CPU, so ten such servers can wait at once on a small machine, and
//!   it is precise to the OS timer, not rounded to tokio's millisecond ticks).
//! - `tools/call`: `tool<NN>` answers one text item `NAME/tool<NN>: <arguments.text>`;
//!   an unknown tool is a JSON-RPC error -32602.
//! - `ping`, notifications (202), `DELETE` (200), `GET` (405: no server stream).
//!
//! Every answer is `application/json` (the spec lets a server answer a POST with JSON
//! when the client accepts both JSON and SSE). It keeps no per-session state beyond a
//! counter, so it can issue any number of sessions.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
const SESSION_HEADER: &str = "mcp-session-id";
/// Largest request body read.
const MAX_BODY: usize = 1 << 20;

/// What one server offers, fixed at start.
struct Offer {
    name: String,
    tools: usize,
    /// The `tools/list` result, serialized once.
    tool_list: Value,
    /// How long `tools/list` waits before answering.
    list_delay: std::time::Duration,
    /// Sessions issued so far.
    sessions: AtomicU64,
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: mcp-bench-target PORT [TOOLS] [NAME] [LIST_DELAY_MS]";
    let port: u16 = args
        .first()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other(usage))?;
    let tools: usize = match args.get(1) {
        Some(n) => n.parse().map_err(|_| std::io::Error::other(usage))?,
        None => 20,
    };
    let name = args.get(2).cloned().unwrap_or_else(|| "bench".into());
    let list_delay = match args.get(3) {
        Some(ms) => {
            std::time::Duration::from_millis(ms.parse().map_err(|_| std::io::Error::other(usage))?)
        }
        None => std::time::Duration::ZERO,
    };
    let tool_list = json!({
        "tools": (0..tools).map(|i| json!({
            "name": format!("tool{i:02}"),
            "description": format!("Tool {i} of {name}: echoes its text argument."),
            "inputSchema": {
                "type": "object",
                "properties": { "text": { "type": "string" } },
                "required": ["text"],
            },
        })).collect::<Vec<_>>()
    });
    let offer: &'static Offer = Box::leak(Box::new(Offer {
        name,
        tools,
        tool_list,
        list_delay,
        sessions: AtomicU64::new(0),
    }));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(SocketAddr::from(([127, 0, 0, 1], port)), offer))
}

async fn serve(addr: SocketAddr, offer: &'static Offer) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "mcp-bench-target {} listening on http://{addr}/mcp",
        offer.name
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(offer, req));
            // A client that goes away mid-request is not an error worth reporting.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: Option<&Value>) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    let body = match body {
        Some(v) => {
            r = r.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(v).unwrap_or_default())
        }
        None => Bytes::new(),
    };
    r.body(Full::new(body)).unwrap_or_default()
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

async fn handle(
    offer: &'static Offer,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match *req.method() {
        Method::POST => {}
        Method::DELETE => return Ok(reply(StatusCode::OK, None)),
        _ => return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, None)),
    }
    let session = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.strip_prefix('s'))
        .and_then(|n| n.parse::<u64>().ok());
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, None)),
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            Some(&rpc_error(&Value::Null, -32700, "parse error")),
        ));
    };
    let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
    let Some(id) = msg.get("id") else {
        // A notification (or a response to a request we never send).
        return Ok(reply(StatusCode::ACCEPTED, None));
    };
    if method == "initialize" {
        let asked = msg
            .pointer("/params/protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = VERSIONS
            .iter()
            .find(|v| **v == asked)
            .unwrap_or(&VERSIONS[VERSIONS.len() - 1]);
        let n = offer.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let result = json!({ "jsonrpc": "2.0", "id": id, "result": {
            "protocolVersion": version,
            "capabilities": { "tools": { "listChanged": false } },
            "serverInfo": { "name": offer.name, "version": "1.0.0" },
        }});
        let mut r = reply(StatusCode::OK, Some(&result));
        if let Ok(v) = format!("s{n}").parse() {
            r.headers_mut().insert(SESSION_HEADER, v);
        }
        return Ok(r);
    }
    match session {
        Some(n) if n >= 1 && n <= offer.sessions.load(Ordering::Relaxed) => {}
        Some(_) => return Ok(reply(StatusCode::NOT_FOUND, None)),
        None => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                Some(&rpc_error(id, -32600, "missing Mcp-Session-Id")),
            ));
        }
    }
    let answer = match method {
        "ping" => json!({ "jsonrpc": "2.0", "id": id, "result": {} }),
        "tools/list" => {
            if !offer.list_delay.is_zero() {
                // A precise wait, not `tokio::time::sleep`: tokio's timer rounds up to
                // whole milliseconds on its own clock, so a caller whose request
                // arrives a little later can find the answer a whole millisecond
                // later, and a merged list would measure that rounding rather than
                // the gateway. A thread of the blocking pool waits instead (no CPU).
                let delay = offer.list_delay;
                let _ = tokio::task::spawn_blocking(move || std::thread::sleep(delay)).await;
            }
            json!({ "jsonrpc": "2.0", "id": id, "result": offer.tool_list })
        }
        "tools/call" => {
            let tool = msg
                .pointer("/params/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let known = tool
                .strip_prefix("tool")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n < offer.tools && tool == format!("tool{n:02}"));
            if known {
                let text = msg
                    .pointer("/params/arguments/text")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                json!({ "jsonrpc": "2.0", "id": id, "result": {
                    "content": [{ "type": "text", "text": format!("{}/{tool}: {text}", offer.name) }],
                    "isError": false,
                }})
            } else {
                rpc_error(id, -32602, &format!("unknown tool {tool}"))
            }
        }
        _ => rpc_error(id, -32601, "method not found"),
    };
    Ok(reply(StatusCode::OK, Some(&answer)))
}
