"""A real MCP server whose lists come in pages: Python SDK 1.x FastMCP over streamable
HTTP, with the SDK's paginated list handlers (a handler taking the request and
returning a `List*Result` with `nextCursor`) put in front of FastMCP's own lists.

Usage: python paged_server.py NAME PORT COUNT PAGE_SIZE

Offers COUNT tools `item00`, `item01`, ... (each returns "NAME item N"),
COUNT prompts of the same names and COUNT resources `notes://NAME/item00`, ..., and
answers `tools/list`, `prompts/list` and `resources/list` PAGE_SIZE items at a time, in
that order. The cursor is opaque to clients (`NAME:<offset>` in base64); a cursor this
server did not issue is refused with JSON-RPC error -32602, as the spec asks.
Listens on 127.0.0.1 only.
"""

import base64
import sys

from mcp import types
from mcp.server.fastmcp import FastMCP
from mcp.shared.exceptions import McpError

name, port, count, page_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
server = FastMCP(name, host="127.0.0.1", port=port, log_level="WARNING")


def item(i):
    return f"item{i:02d}"


def add_item(i):
    def tool() -> str:
        return f"{name} item {i}"

    def prompt() -> str:
        return f"{name} prompt {i}"

    def resource() -> str:
        return f"{name} note {i}"

    server.tool(name=item(i), description=f"item {i} of {name}")(tool)
    server.prompt(name=item(i), description=f"item {i} of {name}")(prompt)
    server.resource(f"notes://{name}/item{i:02d}", name=item(i), mime_type="text/plain")(resource)


for i in range(count):
    add_item(i)


def encode(offset):
    return base64.urlsafe_b64encode(f"{name}:{offset}".encode()).decode()


def decode(cursor):
    """The offset a cursor of ours stands for; refuses anything else."""
    try:
        owner, offset = base64.urlsafe_b64decode(cursor.encode()).decode().rsplit(":", 1)
        if owner == name and 0 < int(offset) < count:
            return int(offset)
    except (ValueError, UnicodeDecodeError):
        pass
    raise McpError(types.ErrorData(code=types.INVALID_PARAMS, message=f"unknown cursor {cursor!r}"))


def page(request, everything):
    """(items of this page, nextCursor) for a list request."""
    cursor = request.params.cursor if request.params else None
    start = 0 if cursor is None else decode(cursor)
    end = start + page_size
    return everything[start:end], (encode(end) if end < len(everything) else None)


lowlevel = server._mcp_server


@lowlevel.list_tools()
async def list_tools(request: types.ListToolsRequest) -> types.ListToolsResult:
    items, next_cursor = page(request, await server.list_tools())
    return types.ListToolsResult(tools=items, nextCursor=next_cursor)


@lowlevel.list_prompts()
async def list_prompts(request: types.ListPromptsRequest) -> types.ListPromptsResult:
    items, next_cursor = page(request, await server.list_prompts())
    return types.ListPromptsResult(prompts=items, nextCursor=next_cursor)


@lowlevel.list_resources()
async def list_resources(request: types.ListResourcesRequest) -> types.ListResourcesResult:
    items, next_cursor = page(request, await server.list_resources())
    return types.ListResourcesResult(resources=items, nextCursor=next_cursor)


if __name__ == "__main__":
    server.run(transport="streamable-http")
