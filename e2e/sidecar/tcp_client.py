"""An unmodified TCP client for the sidecar scenario (plain sockets, no proxy settings).

Usage: python3 tcp_client.py echo HOST PORT     -> prints `echo-ok 102400 bytes`
       python3 tcp_client.py banner HOST PORT   -> prints `<greeting> | <reply to QUIT>`

`echo` sends 100 KiB of every byte value and checks it comes back unchanged (opaque TCP);
`banner` reads the server's greeting before sending anything (server speaks first).
"""

import socket
import sys

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.create_connection((host, port), timeout=10)
if mode == "echo":
    data = bytes(range(256)) * 400
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    print(f"echo-ok {len(got)} bytes" if got == data else f"echo-mismatch {len(got)} bytes")
elif mode == "banner":
    greeting = s.recv(64).decode().strip()
    s.sendall(b"QUIT\r\n")
    print(greeting, "|", s.recv(64).decode().strip())
else:
    raise SystemExit(f"unknown mode {mode!r}")
