#!/usr/bin/env bash
# Makes envoy/certs/ (a test CA, a server certificate for 127.0.0.1/localhost, one client
# certificate) for trying envoy/tls.yaml and envoy/mtls.yaml by hand. Never for production; the
# tests generate their own. envoy/certs/ is ignored by git.
set -euo pipefail
cd "$(dirname "$0")/../envoy"
mkdir -p certs && cd certs
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=envoy-persistence demo CA" -keyout ca-key.pem -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server-key.pem -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 -extfile server.ext -out server.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=client" -keyout client-key.pem -out client.csr 2>/dev/null
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 -out client.pem 2>/dev/null
rm -f server.csr client.csr server.ext ca.srl
echo "envoy/certs: ca.pem, server.pem, server-key.pem, client.pem, client-key.pem"
