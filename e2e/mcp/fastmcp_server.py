"""A real MCP server for the gateway tests: Python SDK 1.x FastMCP over streamable HTTP.

Usage: python fastmcp_server.py NAME PORT [sse]
       python fastmcp_server.py NAME stdio [MARK]

With a port it serves streamable HTTP on 127.0.0.1:PORT (at /mcp), or with `sse` the
legacy HTTP+SSE transport (GET /sse, POST /messages/). With `stdio` it speaks MCP on
stdin/stdout (newline-delimited JSON-RPC) as a gateway's stdio target, writes one line
to stderr when it starts, and exits at EOF on stdin. MARK is ignored: tests put a unique
word on the command line to find the process.

Offers, each mentioning NAME so a test can tell targets apart:
- tools `echo(text)` and `add(a, b)` (both targets share these names on purpose: the
  gateway's prefixes keep them apart), and `whoami()`;
- prompt `greet(who)`;
- resource `notes://NAME/readme` (text) and template `notes://NAME/{topic}`.
- tool `pid()`: the server's process id (tells processes of a stdio target apart).
Listens on 127.0.0.1 only. Exits on SIGTERM/SIGKILL from the test.

With MCP_PIN_VERSIONS=V1,V2,... in the environment the server speaks only those
protocol versions (the SDK's own negotiation: it answers `initialize` with the requested
version when it is one of them, else with the last one, and checks the
`MCP-Protocol-Version` header against them), like a server built before newer versions
existed.
"""

import os
import sys

import mcp.shared.version
import mcp.types
from mcp.server.fastmcp import FastMCP

if os.environ.get("MCP_PIN_VERSIONS"):
    pinned = os.environ["MCP_PIN_VERSIONS"].split(",")
    # The SDK's server session and transport read this very list object.
    mcp.shared.version.SUPPORTED_PROTOCOL_VERSIONS[:] = pinned
    mcp.types.LATEST_PROTOCOL_VERSION = pinned[-1]

name, where = sys.argv[1], sys.argv[2]
stdio = where == "stdio"
server = FastMCP(
    name,
    instructions=f"{name} offers echo, add and notes.",
    host="127.0.0.1",
    port=0 if stdio else int(where),
    log_level="WARNING",
)


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


@server.tool()
def pid() -> int:
    """This server's process id."""
    return os.getpid()


@server.prompt()
def greet(who: str) -> str:
    """A greeting prompt."""
    return f"Hello {who}, from {name}."


@server.resource(f"notes://{name}/readme", mime_type="text/plain")
def readme() -> str:
    """The readme."""
    return f"readme of {name}"


@server.resource(f"notes://{name}/{{topic}}")
def note(topic: str) -> str:
    """A note on a topic."""
    return f"{name} note on {topic}"


if __name__ == "__main__":
    if stdio:
        print(f"{name} stdio server ready", file=sys.stderr, flush=True)
        server.run(transport="stdio")
    else:
        server.run(transport="sse" if sys.argv[3:4] == ["sse"] else "streamable-http")
