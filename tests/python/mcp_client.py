"""MCP clients (the official Python SDK) for the tests: concurrent sessions through one URL.

    python mcp_client.py URL SESSIONS CALLS

Each session connects with the handshake-era protocol (initialize, then Mcp-Session-Id on every
request), calls the tool `whoami` CALLS times and closes (DELETE). Prints one JSON line:
{"sessions": n, "succeeded": n, "failed": n, "servers_per_session": [...], "errors": [...]}.
A session succeeds when every call succeeded and all of them were answered by one server.
"""
import asyncio
import json
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def session(url: str, calls: int) -> tuple[bool, list[str], str]:
    servers: list[str] = []
    try:
        async with Client(streamable_http_client(url), mode="legacy", raise_exceptions=True) as client:
            for _ in range(calls):
                result = await client.call_tool("whoami", {})
                if result.is_error:
                    return False, servers, f"tool error: {result.content}"
                servers.append(result.content[0].text)
    except BaseException as error:  # noqa: BLE001 - any failure of a session is the result
        return False, servers, f"{type(error).__name__}: {error}"[:300]
    return len(set(servers)) == 1, servers, ""


async def main() -> None:
    url, sessions, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    results = await asyncio.gather(*(session(url, calls) for _ in range(sessions)))
    print(json.dumps({
        "sessions": sessions,
        "succeeded": sum(1 for ok, _, _ in results if ok),
        "failed": sum(1 for ok, _, _ in results if not ok),
        "servers_per_session": [sorted(set(servers)) for _, servers, _ in results],
        "errors": sorted({error for _, _, error in results if error})[:5],
    }))


asyncio.run(main())
