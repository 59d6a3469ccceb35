"""A remote homeserver as far as a join's first two federation requests go, run in a container on
the lab deployment's compose network (the Synapse stand-in image's Python, no extra image):

  GET /_matrix/federation/v1/query/directory?room_alias=#big:SERVER   -> the room and this server
  GET /_matrix/federation/unstable/rooms/ROOM/complexity              -> {"v1": COMPLEXITY}

Anything else is a 404 M_UNRECOGNIZED. Synapse asks for the complexity before it joins a remote
room (limit_remote_rooms), so a huge room needs no real state here: the answer is what a real
server computes for a room of COMPLEXITY * 500 current state events. Every request is logged to
stdout, so the test can see which were made. Usage: fake_remote.py CERT KEY COMPLEXITY [PORT]
"""

import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

CERT, KEY, COMPLEXITY = sys.argv[1], sys.argv[2], float(sys.argv[3])
PORT = int(sys.argv[4]) if len(sys.argv) > 4 else 8448


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        print("GET", url.path, flush=True)
        if url.path == "/_matrix/federation/v1/query/directory":
            alias = parse_qs(url.query).get("room_alias", [""])[0]
            server = alias.split(":", 1)[1] if ":" in alias else ""
            return self._answer(200, {"room_id": f"!big:{server}", "servers": [server]})
        parts = url.path.split("/")
        if url.path.startswith("/_matrix/federation/unstable/rooms/") and parts[-1] == "complexity":
            print("complexity asked for", unquote(parts[-2]), flush=True)
            return self._answer(200, {"v1": COMPLEXITY})
        return self._answer(404, {"errcode": "M_UNRECOGNIZED", "error": "not in this fake"})

    do_PUT = do_POST = do_GET

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening", flush=True)
server.serve_forever()
