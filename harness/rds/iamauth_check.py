"""The PAM side of IAM database auth: pam_exec runs this (as the postgres user, standard library only, so it also
runs under a system Python); it passes the login to the dbdrill run that owns the server and exits 0 if let in.

Called as ``python3 -I -S iamauth_check.py [SOCKET]`` with the password (the token) on stdin and PAM_USER,
PAM_SERVICE, PAM_RHOST in the environment. The server is identified by the working directory of the process
that called PAM (PostgreSQL's data directory, PgBouncer's own directory); without SOCKET the run's socket is
named in that directory's ``dbdrill-iam-socket`` file (PgBouncer's PAM service name is fixed, so one service
file serves every run)."""
from __future__ import annotations

import json
import os
import socket
import sys

POINTER = "dbdrill-iam-socket"
TIMEOUT = 10.0


def ask(sock_path: str, request: dict[str, str]) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect(sock_path)
        s.sendall(json.dumps(request).encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while len(answer) < 4096:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.decode(errors="replace").strip()


def main(argv: list[str]) -> int:
    token = sys.stdin.buffer.read(65536).decode(errors="replace").rstrip("\x00\n")
    try:
        cwd = os.readlink(f"/proc/{os.getppid()}/cwd")
    except OSError:
        return 2
    if len(argv) > 1:
        sock_path = argv[1]
    else:
        try:
            with open(os.path.join(cwd, POINTER)) as f:
                sock_path = f.read().strip()
        except OSError:
            return 3  # not a server of a dbdrill run: nobody to ask
    request = {"cwd": cwd, "user": os.environ.get("PAM_USER", ""), "service": os.environ.get("PAM_SERVICE", ""),
               "rhost": os.environ.get("PAM_RHOST", ""), "token": token}
    try:
        answer = ask(sock_path, request)
    except OSError:
        return 4
    return 0 if answer == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
