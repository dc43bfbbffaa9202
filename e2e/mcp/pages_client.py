"""A real MCP client that walks paginated lists: runs under the Python SDK 1.x
(`streamablehttp_client` + `ClientSession`, session style) or 2.x (`mcp.Client`,
2026-07-28 style), whichever the interpreter's venv has.

Usage: python pages_client.py URL [MAX_PAGES]

For `tools/list`, `prompts/list` and `resources/list` it asks for the first page, then
follows `nextCursor` until there is none (at most MAX_PAGES pages per list, default 50,
so a gateway that loops cannot hang the test), and prints one JSON object:
`{"sdk": "1.x"|"2.x", "tools": [[names of page 1], [page 2], ...], "prompts": ...,
"resources": [[uris...], ...], "calls": {tool: text}}` where `calls` holds the answer
of calling the first and the last tool listed. Exits non-zero with the error on stderr
when the SDK raises.
"""

import asyncio
import json
import sys

import mcp

url = sys.argv[1]
max_pages = int(sys.argv[2]) if len(sys.argv) > 2 else 50
V2 = hasattr(mcp, "Client")


def text_of(result):
    return [c.text for c in result.content if getattr(c, "text", None) is not None]


async def walk(fetch, field, key):
    """Every page of one list, as lists of item keys, following nextCursor."""
    pages, cursor = [], None
    while True:
        result = await fetch(cursor)
        pages.append([str(getattr(x, key)) for x in getattr(result, field)])
        cursor = result.next_cursor if V2 else result.nextCursor
        if cursor is None:
            return pages
        if len(pages) >= max_pages:
            raise SystemExit(f"{field}: still a nextCursor after {max_pages} pages")


async def tour(list_tools, list_prompts, list_resources, call_tool):
    out = {
        "sdk": "2.x" if V2 else "1.x",
        "tools": await walk(list_tools, "tools", "name"),
        "prompts": await walk(list_prompts, "prompts", "name"),
        "resources": await walk(list_resources, "resources", "uri"),
        "calls": {},
    }
    names = [n for p in out["tools"] for n in p]
    for n in names[:1] + names[-1:]:
        out["calls"][n] = text_of(await call_tool(n))
    return out


async def main():
    if V2:
        async with mcp.Client(url, mode="auto") as c:
            # "bypass": every page comes from the server, not the SDK's list cache.
            return await tour(
                lambda cur: c.list_tools(cursor=cur, cache_mode="bypass"),
                lambda cur: c.list_prompts(cursor=cur, cache_mode="bypass"),
                lambda cur: c.list_resources(cursor=cur, cache_mode="bypass"),
                lambda n: c.call_tool(n, {}),
            )
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url) as (read, write, _):
        async with mcp.ClientSession(read, write) as s:
            await s.initialize()
            page = lambda cur: mcp.types.PaginatedRequestParams(cursor=cur)  # noqa: E731
            return await tour(
                lambda cur: s.list_tools(params=page(cur)),
                lambda cur: s.list_prompts(params=page(cur)),
                lambda cur: s.list_resources(params=page(cur)),
                lambda n: s.call_tool(n, {}),
            )


print(json.dumps(asyncio.run(main()), sort_keys=True))
