#!/usr/bin/env python3
"""Measure change-to-served time through agentmesh's control plane: milliseconds from a
manifest change landing in the controller's folder until the gateway serves the new
route.

    controller_changes.py --folder DIR --gateway-port P --service nginx --service-port N \
        --changes 100 --path-prefix /change --raw FILE

Each change k rewrites DIR/zz-change.yaml (an HTTPRoute `bench-change` on Gateway
`bench`, one rule `PathPrefix /change/<k>/` to the Service) the way editors and
`kubectl cp` do: the new text goes to a hidden temporary file, which is renamed over the
old one. The clock starts just before the rename; then one keep-alive connection polls
`GET /change/<k>/1k.txt` through the gateway as fast as it answers (404 until the route
is there) and the clock stops at the first 200. Every change waits --pause-ms before the
next, so that changes do not coalesce.

Bounded: exactly --changes changes (plus one warm-up), each given at most
--change-timeout seconds, and the whole run at most --deadline seconds. Prints one line
per change to --raw and a final machine-readable line:

    CHANGE_RESULT changes=100 p50_us=... p99_us=... max_us=... min_us=... polls=... timeouts=0

Exits non-zero when a change was not served in time. Uses only the standard library.
"""

import argparse
import http.client
import math
import os
import sys
import time

ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: bench-change
  namespace: default
spec:
  parentRefs:
  - name: bench
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: {prefix}/{k}/
    backendRefs:
    - name: {service}
      port: {port}
"""


def nearest_rank(sorted_values, pct):
    """The nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class Poller:
    """One keep-alive HTTP/1.1 connection to the gateway, reopened when it breaks."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def status(self, path):
        """The status of GET path, or None when the connection failed."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            self.conn.request("GET", path)
            response = self.conn.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return None


def change(args, poller, k, deadline):
    """Applies change k; returns (microseconds until served, polls) or (None, polls)."""
    target = os.path.join(args.folder, "zz-change.yaml")
    tmp = os.path.join(args.folder, ".zz-change.yaml.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(ROUTE.format(prefix=args.path_prefix, k=k, service=args.service, port=args.service_port))
    path = f"{args.path_prefix}/{k}/1k.txt"
    start = time.perf_counter()
    os.rename(tmp, target)
    limit = min(start + args.change_timeout, deadline)
    polls = 0
    while time.perf_counter() < limit:
        polls += 1
        if poller.status(path) == 200:
            return (time.perf_counter() - start) * 1e6, polls
    return None, polls


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--folder", required=True)
    parser.add_argument("--gateway-port", type=int, required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--service-port", type=int, required=True)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--first", type=int, default=1, help="number of the first change")
    parser.add_argument("--path-prefix", default="/change")
    parser.add_argument("--pause-ms", type=float, default=50)
    parser.add_argument("--change-timeout", type=float, default=5)
    parser.add_argument("--deadline", type=float, default=120)
    parser.add_argument("--raw", required=True)
    args = parser.parse_args()

    deadline = time.perf_counter() + args.deadline
    poller = Poller(args.gateway_port)
    # Warm-up: the route file exists and the poller's connection is open.
    warm, _ = change(args, poller, args.first - 1, deadline)
    if warm is None:
        print("the warm-up change was never served", file=sys.stderr)
        return 1
    times, total_polls, timeouts = [], 0, 0
    with open(args.raw, "w", encoding="utf-8") as raw:
        raw.write("# change  served_us  polls\n")
        for k in range(args.first, args.first + args.changes):
            time.sleep(args.pause_ms / 1000)
            took, polls = change(args, poller, k, deadline)
            total_polls += polls
            raw.write(f"{k} {'timeout' if took is None else f'{took:.0f}'} {polls}\n")
            if took is None:
                timeouts += 1
                if time.perf_counter() >= deadline:
                    break
            else:
                times.append(took)
    times.sort()
    if not times:
        print("no change was served", file=sys.stderr)
        return 1
    print(
        f"CHANGE_RESULT changes={len(times)} p50_us={nearest_rank(times, 50):.0f} "
        f"p99_us={nearest_rank(times, 99):.0f} max_us={times[-1]:.0f} min_us={times[0]:.0f} "
        f"polls={total_polls} timeouts={timeouts}"
    )
    return 1 if timeouts else 0


if __name__ == "__main__":
    sys.exit(main())
