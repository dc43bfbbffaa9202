"""An HTTPS server that answers every GET with the request headers it received, one
`name: value` line each (names lower-cased), plus `x-upstream: <POD>` on the response: a
"provider" whose real TLS certificate the sidecar must verify when it re-encrypts, and
whose answer shows what reached it (a header only the sidecar adds, for instance).

Usage: https_echo.py POD PORT CERT KEY

Listens on every IPv4 and IPv6 address; prints `ready` once it listens. Standard library
only; runs on /usr/bin/python3 as an unprivileged user.
"""

import socket
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POD, PORT, CERT, KEY = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


class HeaderEcho(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = "".join(f"{k.lower()}: {v}\n" for k, v in self.headers.items()).encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-upstream", POD)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print(f"[https-echo] {self.address_string()} {fmt % args}", flush=True)


class DualStack(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(CERT, KEY)
ctx.set_alpn_protocols(["http/1.1"])
server = DualStack(("::", PORT), HeaderEcho)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(f"[https-echo] ready on :{PORT}", flush=True)
server.serve_forever()
