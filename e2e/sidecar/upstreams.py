"""Upstream services of the sidecar scenario, each one a real server in its own pod.

Usage: python3 upstreams.py POD SERVICE:PORT [SERVICE:PORT ...]

Services (all listen on every IPv4 and IPv6 address of the pod):
- `http`: HTTP/1.1 server that answers every GET with the request headers it received,
  one `name: value` line each (names lower-cased), plus `x-upstream: <pod>` on the
  response (POD names the pod), so a client sees exactly what reached the upstream;
- `https`: the same over TLS (ALPN http/1.1), with the certificate chain and key named by
  the environment variables UPSTREAMS_TLS_CERT and UPSTREAMS_TLS_KEY (PEM files): a
  provider whose real certificate a sidecar must verify when it re-encrypts;
- `echo`: TCP echo, byte for byte, until the client closes (opaque TCP);
- `banner`: a server-speaks-first service: sends `220 POD ready` on connect, answers
  `QUIT` with `221 bye`.

Prints `ready` once every socket listens. Runs as an unprivileged user; stops on SIGTERM.
"""

import os
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POD = sys.argv[1]


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

    def log_message(self, *args):
        pass


class DualStackHTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    request_queue_size = 1024

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def listen(port):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(128)
    return s


def accept_forever(sock, handle):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def echo(conn):
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)


def banner(conn):
    with conn:
        conn.sendall(f"220 {POD} ready\r\n".encode())
        if conn.recv(64).strip() == b"QUIT":
            conn.sendall(b"221 bye\r\n")


def tls_context():
    try:
        cert, key = os.environ["UPSTREAMS_TLS_CERT"], os.environ["UPSTREAMS_TLS_KEY"]
    except KeyError as missing:
        raise SystemExit(f"service https needs the environment variable {missing}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def main():
    threads = []
    for spec in sys.argv[2:]:
        service, port = spec.split(":")
        port = int(port)
        if service in ("http", "https"):
            server = DualStackHTTPServer(("::", port), HeaderEcho)
            if service == "https":
                server.socket = tls_context().wrap_socket(server.socket, server_side=True)
            threads.append(threading.Thread(target=server.serve_forever, daemon=True))
        elif service in ("echo", "banner"):
            handle = echo if service == "echo" else banner
            threads.append(threading.Thread(target=accept_forever, args=(listen(port), handle), daemon=True))
        else:
            raise SystemExit(f"unknown service {service!r}")
    for t in threads:
        t.start()
    print("ready", flush=True)
    threading.Event().wait()


main()
