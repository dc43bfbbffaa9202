"""A real MCP client for the gateway tests: Python SDK 2.x (`mcp.Client`), which speaks
the 2026-07-28 protocol: `server/discover`, no `initialize`, no session id, `_meta` and
routing headers on every request.

Usage: python client_v2.py URL SCENARIO [ARGS...]

Prints one JSON object (what the client observed) on stdout; the Rust test asserts on
it. Exits non-zero with the error on stderr when the SDK raises.

Scenarios:
- `tour`: connect (mode "auto": discover, falling back to initialize only if the server
  is not of the new generation), list tools, call every `echo`, list and get prompts,
  list and read resources.
- `call TOOL JSON_ARGS`: connect and call one tool.
- `answer TOOL`: call a tool that asks the client for input (elicitation answered with
  colour "teal", sampling with "sampled: <prompt>"; `compose` tools get topic "tides");
  prints the text and the requests the client was asked.
"""

import asyncio
import json
import sys

import mcp_types as types
from mcp import Client


def text_of(result):
    return [c.text for c in result.content if getattr(c, "text", None) is not None]


async def tour(client):
    out = {
        "protocolVersion": client.protocol_version,
        "discovered": client.session.discover_result is not None,
        "initialized": client.session.initialize_result is not None,
        "serverName": client.server_info.name if client.server_info else None,
        "instructions": client.instructions,
        "capabilities": sorted(
            k for k, v in client.server_capabilities.model_dump().items() if v is not None
        ),
    }
    tools = await client.list_tools()
    out["tools"] = sorted(t.name for t in tools.tools)
    out["calls"] = {}
    for t in out["tools"]:
        if t.endswith("echo"):
            r = await client.call_tool(t, {"text": "hi"})
            out["calls"][t] = {"text": text_of(r), "isError": r.is_error}
    try:
        r = await client.call_tool("nope_missing", {})
        out["unknownTool"] = {"text": text_of(r), "isError": r.is_error}
    except Exception as e:
        out["unknownTool"] = {"error": str(e)}
    prompts = await client.list_prompts()
    out["prompts"] = sorted(p.name for p in prompts.prompts)
    out["promptTexts"] = {}
    for p in out["prompts"]:
        got = await client.get_prompt(p, {"who": "Ada"})
        out["promptTexts"][p] = [m.content.text for m in got.messages]
    resources = await client.list_resources()
    out["resources"] = sorted(str(r.uri) for r in resources.resources)
    out["reads"] = {}
    for uri in out["resources"]:
        got = await client.read_resource(uri)
        out["reads"][uri] = [getattr(c, "text", None) for c in got.contents]
    return out


asked = []


async def on_elicit(context, params):
    asked.append({"method": "elicitation/create", "message": params.message})
    return types.ElicitResult(action="accept", content={"colour": "teal"})


async def on_sample(context, params):
    text = params.messages[0].content.text
    asked.append({"method": "sampling/createMessage", "prompt": text})
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=f"sampled: {text}"), model="test-model"
    )


async def main():
    url, scenario, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    async with Client(url, mode="auto", elicitation_callback=on_elicit, sampling_callback=on_sample) as client:
        if scenario == "tour":
            out = await tour(client)
        elif scenario == "call":
            r = await client.call_tool(args[0], json.loads(args[1]))
            out = {"text": text_of(r), "isError": r.is_error, "protocolVersion": client.protocol_version}
        elif scenario == "answer":
            r = await client.call_tool(args[0], {"topic": "tides"} if args[0].endswith("compose") else {})
            out = {"text": text_of(r), "isError": r.is_error, "requests": asked}
        else:
            raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps(out, sort_keys=True))


asyncio.run(main())
