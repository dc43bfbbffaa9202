"""The `llm` pod's HTTPS front: terminates TLS with the pod's certificate (certs/llm.crt,
DNS name `llm`) and relays the decrypted bytes to `llm-mock-api` on the pod's loopback,
as a provider's load balancer would.

It prints every request chunk it decrypted, so the test can read what the provider
really received (headers a sidecar added on the way, for instance). Standard library
only; runs on /usr/bin/python3.

Usage: llm_front.py LISTEN_PORT UPSTREAM_PORT CERT KEY
"""

import asyncio
import socket
import ssl
import sys


async def pipe(reader, writer, show=None):
    try:
        while data := await reader.read(65536):
            if show:
                print(f"[llm-front] {show} {data!r}", flush=True)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    listen_port, upstream_port, cert, key = sys.argv[1:5]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])

    async def handle(client_r, client_w):
        peer = client_w.get_extra_info("peername")
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", int(upstream_port))
        except OSError as e:
            print(f"[llm-front] {peer}: upstream unreachable: {e}", flush=True)
            client_w.close()
            return
        await asyncio.gather(
            pipe(client_r, up_w, show=f"request from {peer[0]}:"),
            pipe(up_r, client_w),
        )

    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", int(listen_port)))
    server = await asyncio.start_server(handle, sock=sock, ssl=ctx)
    print(f"[llm-front] ready on :{listen_port} -> 127.0.0.1:{upstream_port}", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
