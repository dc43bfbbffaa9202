"""A real MCP server for the gateway tests: Python SDK 1.x FastMCP over streamable HTTP.

Usage: python fastmcp_server.py NAME PORT

Offers, each mentioning NAME so a test can tell targets apart:
- tools `echo(text)` and `add(a, b)` (both targets share these names on purpose: the
  gateway's prefixes keep them apart), and `whoami()`;
- prompt `greet(who)`;
- resource `notes://NAME/readme` (text) and template `notes://NAME/{topic}`.
Listens on 127.0.0.1 only. Exits on SIGTERM/SIGKILL from the test.
"""

import sys

from mcp.server.fastmcp import FastMCP

name, port = sys.argv[1], int(sys.argv[2])
server = FastMCP(name, instructions=f"{name} offers echo, add and notes.", host="127.0.0.1", port=port, log_level="WARNING")


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


@server.resource(f"notes://{name}/{{topic}}")
def note(topic: str) -> str:
    """A note on a topic."""
    return f"{name} note on {topic}"


if __name__ == "__main__":
    server.run(transport="streamable-http")
