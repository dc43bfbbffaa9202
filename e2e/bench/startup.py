#!/usr/bin/env python3
"""Measure exec-to-ready time of a server: milliseconds from spawning the process until
its readiness URL first answers 200.

    startup.py --trials 5 --ready-url http://127.0.0.1:16021/healthz/ready -- CMD ARGS...

Each trial spawns CMD, polls the URL about every millisecond (a refused connection is
retried at once; bash or curl loops cost several ms per probe, which would swamp a
fast start), records the time, then stops the process (SIGTERM, SIGKILL after 5 s)
before the next trial. Prints one line per trial and a final machine-readable line:

    STARTUP_MS min=12.3 median=13.0 max=15.8 trials=5

Exits non-zero if the process exits early or is not ready within --timeout seconds.
Uses only the standard library.
"""

import argparse
import http.client
import statistics
import subprocess
import sys
import time
import urllib.parse


def ready(host: str, port: int, path: str) -> bool:
    """One readiness probe; False on any connection error or non-200 answer."""
    conn = http.client.HTTPConnection(host, port, timeout=0.5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def stop(proc: subprocess.Popen) -> None:
    """Terminate the process and reap it, so its ports are free for the next trial."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_trial(cmd: list[str], url: urllib.parse.SplitResult, timeout: float, log) -> float:
    """Spawn cmd once; return milliseconds until the readiness URL answered 200."""
    host, port = url.hostname or "127.0.0.1", url.port or 80
    path = url.path or "/"
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        while True:
            if ready(host, port, path):
                return (time.monotonic() - start) * 1000.0
            if proc.poll() is not None:
                raise RuntimeError(f"process exited with code {proc.returncode} before it was ready")
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"not ready within {timeout} s")
            time.sleep(0.001)
    finally:
        stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--ready-url", required=True)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--log", default="/dev/null", help="file for the process's output")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("missing command after --")

    url = urllib.parse.urlsplit(args.ready_url)
    times = []
    with open(args.log, "ab") as log:
        for trial in range(1, args.trials + 1):
            try:
                ms = one_trial(cmd, url, args.timeout, log)
            except RuntimeError as err:
                print(f"startup trial {trial}: {err}", file=sys.stderr)
                return 1
            print(f"startup trial {trial}: ready after {ms:.1f} ms", file=sys.stderr)
            times.append(ms)
    print(
        f"STARTUP_MS min={min(times):.1f} median={statistics.median(times):.1f} "
        f"max={max(times):.1f} trials={len(times)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
