"""A real MCP client for the gateway tests: Python SDK 1.x (`streamablehttp_client` +
`ClientSession`), the session style (initialize, Mcp-Session-Id).

Usage: python client_v1.py URL SCENARIO [ARGS...]

Prints one JSON object (what the client observed) on stdout; the Rust test asserts on
it. Exits non-zero with the error on stderr when the SDK raises.

Scenarios:
- `tour`: initialize, list tools, call `echo` on every target found, list and get
  prompts, list and read resources, list templates, then end the session.
- `list-tools`: initialize and list tool names only.
- `call TOOL JSON_ARGS`: initialize and call one tool.
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


def text_of(result):
    return [c.text for c in result.content if getattr(c, "text", None) is not None]


async def tour(session, init):
    out = {
        "protocolVersion": init.protocolVersion,
        "serverName": init.serverInfo.name,
        "instructions": init.instructions,
        "capabilities": sorted(k for k, v in init.capabilities.model_dump().items() if v is not None),
    }
    tools = await session.list_tools()
    out["tools"] = sorted(t.name for t in tools.tools)
    out["calls"] = {}
    for t in out["tools"]:
        if t.endswith("echo"):
            r = await session.call_tool(t, {"text": "hi"})
            out["calls"][t] = {"text": text_of(r), "isError": r.isError}
    adds = [t for t in out["tools"] if t.endswith("add")]
    if adds:
        r = await session.call_tool(adds[0], {"a": 2, "b": 3})
        out["calls"][adds[0]] = {"text": text_of(r), "isError": r.isError}
    try:
        r = await session.call_tool("nope_missing", {})
        out["unknownTool"] = {"text": text_of(r), "isError": r.isError}
    except Exception as e:  # the gateway answers a JSON-RPC error for unknown tools
        out["unknownTool"] = {"error": str(e)}
    prompts = await session.list_prompts()
    out["prompts"] = sorted(p.name for p in prompts.prompts)
    out["promptTexts"] = {}
    for p in out["prompts"]:
        got = await session.get_prompt(p, {"who": "Ada"})
        out["promptTexts"][p] = [m.content.text for m in got.messages]
    resources = await session.list_resources()
    out["resources"] = sorted(str(r.uri) for r in resources.resources)
    out["reads"] = {}
    for uri in out["resources"]:
        got = await session.read_resource(uri)
        out["reads"][uri] = [{"uri": str(c.uri), "text": getattr(c, "text", None)} for c in got.contents]
    templates = await session.list_resource_templates()
    out["templates"] = sorted(t.uriTemplate for t in templates.resourceTemplates)
    return out


async def main():
    url, scenario, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    async with streamablehttp_client(url) as (read, write, get_session_id):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            if scenario == "tour":
                out = await tour(session, init)
                out["sessionId"] = get_session_id()
            elif scenario == "list-tools":
                tools = await session.list_tools()
                out = {"tools": sorted(t.name for t in tools.tools)}
            elif scenario == "call":
                r = await session.call_tool(args[0], json.loads(args[1]))
                out = {"text": text_of(r), "isError": r.isError}
            else:
                raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps(out, sort_keys=True))


asyncio.run(main())
