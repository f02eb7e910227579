"""A byte echo for the router benchmark's wake-up probe: `python _echo.py PORT`.

Blocking and one connection at a time on purpose: between messages the process sleeps in
`recv`, as a proxy sleeps in `epoll_wait` between requests, so a message pays a real wake-up.
"""

from __future__ import annotations

import socket
import sys


def main(port: int) -> None:
    with socket.create_server(("127.0.0.1", port)) as server:
        while True:
            conn, _ = server.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while data := conn.recv(4096):
                    conn.sendall(data)


if __name__ == "__main__":
    main(int(sys.argv[1]))
