"""A light stand-in backend for fleet benchmarks: stdlib HTTP, answers /health in microseconds.

    python light_backend.py PORT

One request at a time, like an event loop: ``GET /block`` blocks it for good, and SIGTERM is only
noted until the loop runs again (uvicorn's handler does the same), so a blocked one ignores it.
"""

import json
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/block":
            time.sleep(3600)  # a sync call in an async handler
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Health)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    server.timeout = 0.2
    while not stopping:
        server.handle_request()
