"""A small HTTP server on 127.0.0.1 for salt-api stand-ins (unit and integration tests)."""

import contextlib
import http.server
import json
import threading

LOOPBACK = "127.0.0.1"


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler with body helpers and no access log on stderr."""

    def read_body(self):
        """The request body as bytes."""
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send_body(self, code, data, ctype="text/plain"):
        """Answer ``code`` with ``data`` (bytes)."""
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, value, code=200):
        """Answer ``code`` with ``value`` as JSON."""
        self.send_body(code, json.dumps(value).encode(), "application/json")

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass


@contextlib.contextmanager
def serving(handler_class):
    """Serve ``handler_class`` on a free 127.0.0.1 port in a thread; yield the server."""
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler_class)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="fake-http")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url_of(server):
    """``http://127.0.0.1:<port>`` of a :func:`serving` server."""
    return f"http://{LOOPBACK}:{server.server_address[1]}"
