"""A real MCP server for the gateway tests: Python SDK 2.x `MCPServer`, speaking only
the 2026-07-28 protocol (`server/discover`, per-request `_meta`, no `initialize`, no
session id), or both generations as the SDK does by default.

Usage: python modern_server.py NAME PORT [both] [asks]

The SDK's streamable-HTTP app serves both protocol generations: a POST whose
`MCP-Protocol-Version` header is a 2026-07-28 version goes to its single-exchange
(modern) entry, anything else to the session-style transport. Without `both` this
fixture keeps only the first: every other POST (an `initialize` handshake, a
session-style request) is refused the way a modern-only server refuses it, HTTP 400
with JSON-RPC error -32022 (`UNSUPPORTED_PROTOCOL_VERSION`) whose `data.supported`
lists only modern versions, built with the SDK's own rejection helper; GET and DELETE
(session-style streams and session ends) get 405. That is what the SDK's own client
takes as "modern-only server" (`mcp.client._probe`). With `both`, session-style
requests are served by the SDK as usual.

Offers the same surface as fastmcp_server.py, each answer mentioning NAME:
- tools `echo(text)`, `add(a, b)`, `whoami()`;
- prompt `greet(who)`;
- resource `notes://NAME/readme` (text).
With `asks`, two more tools that need input from the client, written the SDK 2.x way
(a `Resolve` parameter whose resolver returns `Elicit` / `Sample`): on 2026-07-28 the
SDK answers the call with an `input_required` result carrying the request, and the
client retries the call with `inputResponses` and the echoed `requestState`; on the
session style it sends a standalone server-to-client request instead:
- `favourite()`: asks for a colour (elicitation), answers `NAME: <colour>`;
- `compose(topic)`: asks the client's model (sampling), answers `NAME got: <text>`.
Listens on 127.0.0.1 only. Counts the session-style requests it got (refused, or served
with `both`) and prints the count at /session-style (GET), so a test can tell which
style the gateway used.
"""

import json
import sys
from typing import Annotated

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.resolve import Elicit, Resolve, Sample
from mcp_types import CreateMessageResult, SamplingMessage, TextContent
from pydantic import BaseModel
from mcp.shared.inbound import unsupported_protocol_version_rejection
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

name, port = sys.argv[1], int(sys.argv[2])
both = "both" in sys.argv[3:]
asks = "asks" in sys.argv[3:]
era = "both generations" if both else "2026-07-28 only"
server = MCPServer(name, instructions=f"{name} ({era}) offers echo, add and notes.")


@server.tool()
def echo(text: str) -> str:
    """Echo the text back, tagged with the server name."""
    return f"{name}: {text}"


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def whoami() -> str:
    """Name this server."""
    return name


@server.prompt()
def greet(who: str) -> str:
    """A greeting prompt."""
    return f"Hello {who}, from {name}."


@server.resource(f"notes://{name}/readme", mime_type="text/plain")
def readme() -> str:
    """The readme."""
    return f"readme of {name}"


class Colour(BaseModel):
    colour: str


def ask_colour() -> Elicit[Colour]:
    return Elicit(f"{name} asks: your favourite colour?", Colour)


def ask_model(topic: str) -> Sample:
    msg = SamplingMessage(role="user", content=TextContent(type="text", text=f"a line on {topic}"))
    return Sample([msg], max_tokens=50)


if asks:

    @server.tool()
    def favourite(colour: Annotated[Colour, Resolve(ask_colour)]) -> str:
        """Ask the user for a colour."""
        return f"{name}: {colour.colour}"

    @server.tool()
    def compose(topic: str, line: Annotated[CreateMessageResult, Resolve(ask_model)]) -> str:
        """Ask the client's model for a line on a topic."""
        return f"{name} got: {line.content.text}"


sdk_app = server.streamable_http_app(json_response=True)
session_style = {"count": 0}


async def send_json(send, status, body):
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return await sdk_app(scope, receive, send)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    version = headers.get("mcp-protocol-version")
    if scope["path"] == "/session-style":
        return await send_json(send, 200, session_style)
    if version in MODERN_PROTOCOL_VERSIONS:
        return await sdk_app(scope, receive, send)
    session_style["count"] += 1
    if both:
        return await sdk_app(scope, receive, send)
    if scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 405, "headers": [(b"allow", b"POST")]})
        return await send({"type": "http.response.body", "body": b""})
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    try:
        message = json.loads(body)
        request_id = message.get("id")
        asked = (message.get("params") or {}).get("protocolVersion")
    except (ValueError, AttributeError):
        request_id, asked = None, None
    rejection = unsupported_protocol_version_rejection(str(version or asked or "(none)"))
    error = {"code": rejection.code, "message": rejection.message, "data": rejection.data}
    await send_json(send, 400, {"jsonrpc": "2.0", "id": request_id, "error": error})


uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
