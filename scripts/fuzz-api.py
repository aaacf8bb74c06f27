#!/usr/bin/env python3
"""fuzz-api.py SOCKET SPEC SECONDS

Runs schemathesis (`--checks all`) against the vmmd serving SOCKET, for at most SECONDS,
with scripts/schemathesis.toml. schemathesis speaks TCP, vmmd a Unix socket: a relay on
127.0.0.1 (an ephemeral port) carries each connection over, half-closes included.
Exits with schemathesis's status (0: no failure).
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def relay(listener, path):
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.connect(path)
        except OSError:
            client.close()
            continue
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def main():
    path, spec, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    threading.Thread(target=relay, args=(listener, path), daemon=True).start()
    port = listener.getsockname()[1]
    here = os.path.dirname(os.path.abspath(__file__))
    spec = os.path.abspath(spec)
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", os.path.join(here, "schemathesis.toml"),
               "run", spec, "--url", f"http://127.0.0.1:{port}", "--checks", "all",
               "--max-time", seconds, "--workers", "1", "--no-color"]
    # schemathesis keeps a cache where it runs: somewhere of its own, not the work tree.
    workdir = tempfile.mkdtemp(prefix="fuzz-api-")
    try:
        return subprocess.run(command, cwd=workdir).returncode
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
