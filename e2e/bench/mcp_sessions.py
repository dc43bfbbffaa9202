"""Open MCP sessions (streamable HTTP, session style) for e2e/bench/mcp.sh: for each, an
`initialize` and the `notifications/initialized` that completes it, the way an SDK
client starts, over one keep-alive connection. Standard library only.

Usage: python3 mcp_sessions.py URL COUNT [--time-limit SECONDS]

Prints one line: `SESSIONS opened=N seconds=S first=<id> last=<id>`. Exits non-zero
if any answer is not what the spec says (initialize: 200 with a result and an
Mcp-Session-Id; the notification: 202), or when the time limit runs out first.
"""

import argparse
import http.client
import json
import sys
import time
import urllib.parse

VERSION = "2025-06-18"

p = argparse.ArgumentParser()
p.add_argument("url")
p.add_argument("count", type=int)
p.add_argument("--time-limit", type=float, default=120.0)
args = p.parse_args()

u = urllib.parse.urlsplit(args.url)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
init = json.dumps({
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": VERSION, "capabilities": {},
               "clientInfo": {"name": "agentmesh-bench", "version": "1"}},
})
initialized = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})


def post(body, extra):
    conn.request("POST", u.path, body=body, headers={**headers, **extra})
    r = conn.getresponse()
    return r, r.read()


start = time.monotonic()
first = last = None
for i in range(args.count):
    if time.monotonic() - start > args.time_limit:
        sys.exit(f"time limit of {args.time_limit} s reached after {i} sessions")
    r, body = post(init, {})
    sid = r.getheader("Mcp-Session-Id")
    if r.status != 200 or not sid or b'"result"' not in body:
        sys.exit(f"initialize #{i}: HTTP {r.status}, session id {sid!r}, body {body[:300]!r}")
    r, body = post(initialized, {"Mcp-Session-Id": sid, "MCP-Protocol-Version": VERSION})
    if r.status != 202:
        sys.exit(f"notifications/initialized #{i}: HTTP {r.status}, body {body[:300]!r}")
    first = first or sid
    last = sid
print(f"SESSIONS opened={args.count} seconds={time.monotonic() - start:.2f} first={first} last={last}")
