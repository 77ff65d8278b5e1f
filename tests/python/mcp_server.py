"""An MCP server (the official Python SDK, streamable HTTP, handshake-era sessions) for the tests.

    python mcp_server.py NAME PORT

Serves /mcp with a tool `whoami` that answers NAME (which server handled the call), and GET /healthz
for Envoy's health checks. Sessions live in this process: a request carrying an id it did not issue
gets 404, as the protocol requires.
"""
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.responses import PlainTextResponse

name, port = sys.argv[1], int(sys.argv[2])
server = MCPServer(name)


@server.tool()
def whoami() -> str:
    """The name of the server that handled this call."""
    return name


@server.custom_route("/healthz", methods=["GET"])
async def healthz(_request):
    return PlainTextResponse("ok")


# Requests arrive through Envoy under the test's host name: no DNS-rebinding host check.
app = server.streamable_http_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
