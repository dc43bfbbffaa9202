-- wrk script: at the end of a run, print one machine-readable line with the figures the
-- benchmark needs, so run.sh never parses wrk's human-readable units ("45.2us", "1.2ms").
-- Latencies are in microseconds; errors counts connect/read/write/timeout failures and
-- non-2xx/3xx answers.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d p50_us=%.0f p99_us=%.0f errors=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
