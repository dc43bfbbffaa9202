-- wrk script for e2e/bench/mcp.sh: POST one JSON-RPC message to an MCP endpoint on an
-- open session, check every answer, and print one machine-readable line at the end.
--
-- Environment: MCP_BODY (the JSON-RPC request), MCP_SESSION_ID, MCP_PROTOCOL_VERSION.
-- An answer counts as an error unless it is HTTP 2xx with a JSON-RPC "result" (a
-- JSON-RPC error arrives with HTTP 200 too, so the status alone would not catch it).
-- Latencies are in microseconds.
wrk.method = "POST"
wrk.body = os.getenv("MCP_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Mcp-Session-Id"] = os.getenv("MCP_SESSION_ID")
wrk.headers["MCP-Protocol-Version"] = os.getenv("MCP_PROTOCOL_VERSION")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
end

function response(status, headers, body)
  -- Non-2xx answers are already in summary.errors.status.
  if status < 300 and not string.find(body, '"result"', 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do
    b = b + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d p50_us=%.0f p99_us=%.0f errors=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout + b))
end
