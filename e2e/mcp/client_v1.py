"""A real MCP client for the gateway tests: Python SDK 1.x (`streamablehttp_client` +
`ClientSession`), the session style (initialize, Mcp-Session-Id).

Usage: python client_v1.py URL SCENARIO [ARGS...]

With MCP_CLIENT_TRANSPORT=sse in the environment it connects with the legacy HTTP+SSE
transport (`sse_client`, URL being the SSE endpoint) instead of streamable HTTP.

Prints one JSON object (what the client observed, always with the negotiated
`protocolVersion` and the `sessionId` the server gave, or null) on stdout; the Rust test asserts on
it. Exits non-zero with the error on stderr when the SDK raises.

Scenarios:
- `tour`: initialize, list tools, call `echo` on every target found, list and get
  prompts, list and read resources, list templates, then end the session.
- `list-tools`: initialize and list tool names only.
- `call TOOL JSON_ARGS`: initialize and call one tool.
- `progress TOOL JSON_ARGS`: call one tool with a progress callback and a logging
  callback; prints the result, the progress updates and the log messages seen.
- `answer TOOL`: call one tool with an elicitation callback (answers colour "teal") and
  a sampling callback (answers "sampled: <prompt>"); prints the result and the requests.
- `cancel TOOL COUNTER`: call TOOL (which reports progress once, then waits), cancel it
  with `notifications/cancelled` once its progress arrives, then poll COUNTER (a tool
  counting cancellations) until it is non-zero; prints what it saw.
- `list-changed TOOL`: call TOOL (which changes the tool list), wait for
  `notifications/tools/list_changed` on the GET stream, then list tool names.
"""

import asyncio
import contextlib
import json
import os
import sys

import anyio
from mcp import ClientSession, types
from mcp.client.sse import sse_client
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


seen = {"requests": [], "logs": [], "notifications": []}
tools_changed = anyio.Event()


async def on_elicit(context, params):
    seen["requests"].append({"method": "elicitation/create", "message": params.message})
    return types.ElicitResult(action="accept", content={"colour": "teal"})


async def on_sample(context, params):
    text = params.messages[0].content.text
    seen["requests"].append({"method": "sampling/createMessage", "prompt": text})
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=f"sampled: {text}"), model="test-model"
    )


async def on_log(params):
    seen["logs"].append(params.data)


async def on_message(message):
    if isinstance(message, types.ServerNotification):
        method = message.root.method
        seen["notifications"].append(method)
        if method == "notifications/tools/list_changed":
            tools_changed.set()


async def cancel(session, tool, counter):
    progressed = anyio.Event()

    async def on_progress(progress, total, message):
        progressed.set()

    out = {}
    async with anyio.create_task_group() as tg:

        async def call():
            try:
                r = await session.call_tool(tool, {}, progress_callback=on_progress)
                out["call"] = text_of(r)
            except Exception as e:
                out["call"] = {"error": str(e)}

        tg.start_soon(call)
        with anyio.fail_after(20):
            await progressed.wait()
        # The request id the SDK gave the call: the last one it used.
        request_id = session._request_id - 1
        await session.send_notification(
            types.ClientNotification(
                types.CancelledNotification(
                    params=types.CancelledNotificationParams(requestId=request_id, reason="test")
                )
            )
        )
        out["cancelledRequest"] = request_id
        for _ in range(100):
            r = await session.call_tool(counter, {})
            out["counter"] = text_of(r)
            if out["counter"] != ["0"]:
                break
            await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    return out


@contextlib.asynccontextmanager
async def connect(url):
    """(read, write, get_session_id) over the transport the environment names."""
    if os.environ.get("MCP_CLIENT_TRANSPORT") == "sse":
        endpoint = {}
        async with sse_client(url, on_session_created=lambda sid: endpoint.update(sid=sid)) as (read, write):
            yield read, write, lambda: endpoint.get("sid")
    else:
        async with streamablehttp_client(url) as (read, write, get_session_id):
            yield read, write, get_session_id


async def main():
    url, scenario, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    async with connect(url) as (read, write, get_session_id):
        async with ClientSession(
            read,
            write,
            elicitation_callback=on_elicit,
            sampling_callback=on_sample,
            logging_callback=on_log,
            message_handler=on_message,
        ) as session:
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
            elif scenario == "progress":
                progress = []

                async def on_progress(value, total, message):
                    progress.append({"progress": value, "total": total, "message": message})

                r = await session.call_tool(args[0], json.loads(args[1]), progress_callback=on_progress)
                out = {"text": text_of(r), "isError": r.isError, "progress": progress, "logs": seen["logs"]}
            elif scenario == "answer":
                r = await session.call_tool(args[0], {"topic": "tides"} if args[0].endswith("compose") else {})
                out = {"text": text_of(r), "isError": r.isError, "requests": seen["requests"]}
            elif scenario == "cancel":
                out = await cancel(session, args[0], args[1])
            elif scenario == "list-changed":
                r = await session.call_tool(args[0], {})
                with anyio.fail_after(20):
                    await tools_changed.wait()
                tools = await session.list_tools()
                out = {"text": text_of(r), "tools": sorted(t.name for t in tools.tools), "notifications": seen["notifications"]}
            else:
                raise SystemExit(f"unknown scenario {scenario}")
            out.setdefault("protocolVersion", init.protocolVersion)
            out.setdefault("sessionId", get_session_id())
    print(json.dumps(out, sort_keys=True))


asyncio.run(main())
