"""An HTTP server on 127.0.0.1 for tests of downloads (loopback only: nothing leaves the machine)."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from contextlib import contextmanager
from pathlib import Path


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; ``requests`` lists the paths asked for, in order."""

    requests: list[str]

    def log_message(self, *args):  # keep the test's output clean
        pass


@contextmanager
def serve(folder: Path, handler=Handler):
    """An HTTP server for ``folder`` on 127.0.0.1 (an ephemeral port), in a thread; yields its base URL."""
    seen: list[str] = []

    class Counting(handler):
        requests = seen

        def do_GET(self):
            seen.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Counting, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
