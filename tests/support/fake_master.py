"""
Stand-ins for a master's request server, on 127.0.0.1 only, for unit and functional tests.

- :class:`AnsweringMaster`: a ZeroMQ REP socket that answers a clear ping the way a
  salt-master worker does (it sends the load back).
- :class:`SilentMaster`: a listening TCP socket nobody accepts from: the kernel
  completes handshakes, nothing ever answers (a frozen master, as seen from outside).
- :func:`closed_port`: a port where nothing listens (connection refused).
"""

import socket
import threading

import salt.payload
import zmq

LOOPBACK = "127.0.0.1"


class AnsweringMaster:
    """Answer every request with its ``load`` (or ``reply`` when given) until stopped."""

    def __init__(self, reply=None):
        self.reply = reply
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.port = self.socket.bind_to_random_port(f"tcp://{LOOPBACK}")
        self.requests = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while not self._stop.is_set():
            if not self.socket.poll(50, zmq.POLLIN):
                continue
            request = salt.payload.loads(self.socket.recv())
            self.requests.append(request)
            answer = request.get("load") if self.reply is None else self.reply
            self.socket.send(salt.payload.dumps(answer))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close(linger=0)
        self.context.term()


class SilentMaster:
    """A TCP port that accepts connections in the kernel and never answers."""

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind((LOOPBACK, 0))
        self.socket.listen(64)
        self.port = self.socket.getsockname()[1]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.socket.close()


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]
