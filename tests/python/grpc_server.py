"""A gRPC server (grpcio) for the tests, with no generated code: raw bytes in and out.

    python grpc_server.py NAME PORT

Method /persistence.Echo/Who answers NAME (which server handled the call).
"""
import sys
from concurrent import futures

import grpc

name, port = sys.argv[1], int(sys.argv[2])


def who(_request: bytes, _context) -> bytes:
    return name.encode()


handler = grpc.method_handlers_generic_handler(
    "persistence.Echo",
    {"Who": grpc.unary_unary_rpc_method_handler(who, request_deserializer=None, response_serializer=None)},
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"127.0.0.1:{port}")
server.start()
server.wait_for_termination()
