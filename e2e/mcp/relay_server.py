"""A real MCP server whose tools talk back to the client during a call, for the
gateway's relay tests: Python SDK 1.x FastMCP over streamable HTTP (the default SSE
answers, with the session's GET stream).

Usage: python relay_server.py NAME PORT [sse]
       python relay_server.py NAME stdio   (MCP on stdin/stdout, a stdio target)

With `sse` it serves the legacy HTTP+SSE transport (GET /sse, POST /messages/), where
every message to the client, answers included, goes on the one event stream.

Tools, each mentioning NAME so a test can tell targets apart:
- `count(n)`: reports progress n times and logs each step (ctx.info), then answers.
- `favourite()`: asks the client for a colour (elicitation) and answers with it.
- `compose(topic)`: asks the client's model (sampling) and answers with its text.
- `linger()`: reports progress once, then sleeps until cancelled; `cancellations()`
  counts the lingering calls that were cancelled.
- `grow()`: adds tool `extra` and notifies `notifications/tools/list_changed` (sent on
  the session's GET stream, tied to no request).
Listens on 127.0.0.1 only. Exits on SIGTERM/SIGKILL from the test.
"""

import sys

import anyio
from mcp.server.fastmcp import Context, FastMCP
from mcp.types import SamplingMessage, TextContent
from pydantic import BaseModel

name, where = sys.argv[1], sys.argv[2]
stdio = where == "stdio"
server = FastMCP(name, host="127.0.0.1", port=0 if stdio else int(where), log_level="WARNING")


@server.tool()
async def count(n: int, ctx: Context) -> str:
    """Count to n, reporting progress and logging each step."""
    for i in range(1, n + 1):
        await ctx.info(f"{name} step {i}")
        await ctx.report_progress(i, n, f"step {i}")
    return f"{name} counted to {n}"


class Colour(BaseModel):
    colour: str


@server.tool()
async def favourite(ctx: Context) -> str:
    """Ask the user for a colour."""
    got = await ctx.elicit(f"{name} asks: your favourite colour?", Colour)
    if got.action != "accept":
        return f"{name}: {got.action}"
    return f"{name}: {got.data.colour}"


@server.tool()
async def compose(topic: str, ctx: Context) -> str:
    """Ask the client's model for a line on a topic."""
    msg = SamplingMessage(role="user", content=TextContent(type="text", text=f"a line on {topic}"))
    got = await ctx.session.create_message([msg], max_tokens=50, related_request_id=ctx.request_id)
    return f"{name} got: {got.content.text}"


cancelled = {"n": 0}


@server.tool()
async def linger(ctx: Context) -> str:
    """Wait until cancelled (at most 60 s)."""
    try:
        await ctx.report_progress(0, 1, "lingering")
        await anyio.sleep(60)
        return "not cancelled"
    except anyio.get_cancelled_exc_class():
        cancelled["n"] += 1
        raise


@server.tool()
def cancellations() -> int:
    """How many lingering calls were cancelled."""
    return cancelled["n"]


@server.tool()
async def grow(ctx: Context) -> str:
    """Add tool `extra` and tell clients the tool list changed."""

    def extra() -> str:
        """Added at run time."""
        return f"{name} extra"

    server.add_tool(extra, name="extra")
    await ctx.session.send_tool_list_changed()
    return "grown"


if __name__ == "__main__":
    if stdio:
        server.run(transport="stdio")
    else:
        server.run(transport="sse" if sys.argv[3:4] == ["sse"] else "streamable-http")
