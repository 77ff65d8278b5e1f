"""gRPC clients (grpcio) for the tests, through Envoy.

    python grpc_client.py ADDRESS session CLIENTS CALLS
        Each client makes a first call, keeps the x-session-token the response's initial metadata
        carries, and sends it with its next CALLS calls (a new channel per call, so no connection
        can stand in for persistence). Prints {"clients": n, "servers_per_client": [...],
        "tokens": n, "errors": [...]}.
    python grpc_client.py ADDRESS header VALUE CALLS
        CALLS calls carrying metadata x-tenant: VALUE. Prints {"servers": [...], "errors": [...]}.
"""
import json
import sys

import grpc


def call(address: str, metadata: list[tuple[str, str]]) -> tuple[str, dict[str, str]]:
    with grpc.insecure_channel(address) as channel:
        who = channel.unary_unary("/persistence.Echo/Who", request_serializer=None, response_deserializer=None)
        response, rpc = who.with_call(b"", metadata=metadata, timeout=10)
        return response.decode(), dict(rpc.initial_metadata())


def main() -> None:
    address, mode = sys.argv[1], sys.argv[2]
    errors: list[str] = []
    if mode == "session":
        clients, calls = int(sys.argv[3]), int(sys.argv[4])
        servers_per_client, tokens = [], 0
        for _ in range(clients):
            servers = []
            try:
                server, initial = call(address, [])
                servers.append(server)
                token = initial.get("x-session-token")
                tokens += token is not None
                for _ in range(calls):
                    server, _ = call(address, [("x-session-token", token)] if token else [])
                    servers.append(server)
            except grpc.RpcError as error:
                errors.append(f"{error.code()}: {error.details()}")
            servers_per_client.append(sorted(set(servers)))
        print(json.dumps({"clients": clients, "servers_per_client": servers_per_client, "tokens": tokens, "errors": errors[:5]}))
    else:
        value, calls = sys.argv[3], int(sys.argv[4])
        servers = []
        for _ in range(calls):
            try:
                servers.append(call(address, [("x-tenant", value)])[0])
            except grpc.RpcError as error:
                errors.append(f"{error.code()}: {error.details()}")
        print(json.dumps({"servers": sorted(set(servers)), "calls": len(servers), "errors": errors[:5]}))


main()
