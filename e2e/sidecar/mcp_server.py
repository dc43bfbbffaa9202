"""The FastMCP fixture (e2e/mcp/fastmcp_server.py) serving a whole pod instead of loopback.

Usage: python mcp_server.py NAME PORT

Listens on every IPv4 address of the pod, and turns off the SDK's DNS-rebinding guard,
which the fixture gets for its loopback address and which would refuse the pod's name in
the Host header. Same tools, prompts and resources as the fixture.
"""

import pathlib
import runpy
import sys

fixture = pathlib.Path(__file__).resolve().parent.parent / "mcp" / "fastmcp_server.py"
sys.argv = [str(fixture), *sys.argv[1:]]
server = runpy.run_path(str(fixture), run_name="fixture")["server"]
server.settings.host = "0.0.0.0"
server.settings.transport_security = None
server.run(transport="streamable-http")
