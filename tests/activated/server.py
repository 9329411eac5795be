#!/usr/bin/env python3
"""A socket-activated HTTP server, as systemd starts one (sd_listen_fds(3)): it serves on the
sockets it was given at fd 3 on, and only if LISTEN_PID names this very process. Each answer
says which process served it and on which socket (LISTEN_FDNAMES). SIGTERM stops it
gracefully: it finishes the request it is serving and exits. START_DELAY (seconds) makes it
slow to start: it sleeps that long before it serves. Run by tests/tests/activated.rs
under ringleader's primary; it knows nothing of ringleader."""

import http.server
import os
import signal
import socket
import sys
import threading
import time

LISTEN_FDS_START = 3


def listen_fds():
    pid = os.environ.get("LISTEN_PID")
    if pid != str(os.getpid()):
        sys.exit(f"server.py: LISTEN_PID is {pid!r}, not this process ({os.getpid()})")
    count = int(os.environ.get("LISTEN_FDS", "0"))
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    if count < 1:
        sys.exit("server.py: no socket was passed (LISTEN_FDS)")
    return [
        (socket.socket(fileno=LISTEN_FDS_START + i), names[i] if i < len(names) else "unknown")
        for i in range(count)
    ]


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"hello from {os.getpid()} on {self.server.name}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Activated(http.server.HTTPServer):
    """An HTTP server on a socket that is already bound and listening."""

    def __init__(self, sock, name):
        super().__init__(sock.getsockname()[:2], Hello, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.name = name


def main():
    # Blocked before any thread starts, so that only sigwait below sees it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    servers = [Activated(sock, name) for sock, name in listen_fds()]
    time.sleep(float(os.environ.get("START_DELAY", "0")))
    for s in servers:
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}).start()
    signal.sigwait({signal.SIGTERM})
    for s in servers:
        s.shutdown()


if __name__ == "__main__":
    main()
