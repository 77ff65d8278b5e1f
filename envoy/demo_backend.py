#!/usr/bin/env python3
"""A demo backend for the examples (docker-compose, func-e): answers with its name, serves
/healthz, and shows the persistence decision Envoy passes in x-persistence-decision.

    python3 envoy/demo_backend.py 8081 backend-1
"""
import html
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, NAME = int(sys.argv[1]), sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/healthz":
            return self.reply(200, "text/plain", "ok\n")
        decision = self.headers.get("x-persistence-decision", "-")
        if "text/html" in self.headers.get("accept", ""):
            body = (f"<!doctype html><title>{NAME}</title><h1 id=backend>{NAME}</h1>"
                    f"<p>Served by <b>{NAME}</b>. Reload: with persistence you stay here.</p>"
                    f"<p>Persistence decision: <code id=decision>{html.escape(decision)}</code></p>\n")
            return self.reply(200, "text/html; charset=utf-8", body)
        self.reply(200, "text/plain", f"backend={NAME}\n")

    def reply(self, status, content_type, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("x-backend", NAME)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
