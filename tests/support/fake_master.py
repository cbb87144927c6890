"""
Stand-ins for a master's request server, on 127.0.0.1 only, for unit and functional tests.

- :class:`AnsweringMaster`: a ZeroMQ REP socket that answers a clear ping the way a
  salt-master worker does (it sends the load back).
- :class:`SilentMaster`: a listening TCP socket nobody accepts from: the kernel
  completes handshakes, nothing ever answers (a frozen master, as seen from outside).
- :class:`AcceptingPort`: a port that accepts and holds every TCP connection (a
  publish port as a TCP-only probe sees it).
- :func:`closed_port`: a port where nothing listens (connection refused).
"""

import socket
import threading

import salt.payload
import zmq

LOOPBACK = "127.0.0.1"


def clear_ping_answer(request):
    """What a salt-master worker answers a clear ping: the load, serialized."""
    return salt.payload.dumps(salt.payload.loads(request)["load"])


class AnsweringMaster:
    """A ZeroMQ REP socket in a thread answering every raw request with ``answer(request)``."""

    def __init__(self, answer=clear_ping_answer):
        self.answer = answer
        self.requests = []  # raw request bytes, in order
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.port = self.socket.bind_to_random_port(f"tcp://{LOOPBACK}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fake-master")
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            if self.socket.poll(50, zmq.POLLIN):
                request = self.socket.recv()
                self.requests.append(request)
                self.socket.send(self.answer(request))

    def close(self):
        """Stop answering and release the port."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close(linger=0)
        self.context.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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


class AcceptingPort:
    """
    A loopback port that accepts every TCP connection and holds it open (a master's
    publish port as the beacon's probe sees it: TCP only). Unlike a socket nobody
    accepts from, its backlog never fills however many probes connect.
    """

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind((LOOPBACK, 0))
        self.socket.listen(64)
        self.socket.settimeout(0.1)
        self.port = self.socket.getsockname()[1]
        self.accepted = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="accepting-port")

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)
            if len(self.accepted) > 64:
                self.accepted = [c for c in self.accepted if self._peer_open(c)]

    @staticmethod
    def _peer_open(conn):
        """False (and closed here) when the peer has closed its end, as probes do."""
        try:
            if conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                conn.close()
                return False
        except BlockingIOError:
            return True
        except OSError:
            conn.close()
            return False
        return True

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()
        self.socket.close()


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]
