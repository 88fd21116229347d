"""``python -m tests.faultfs MOUNTPOINT BACKING [--control SOCKET] [--debug]`` runs the lossy
file system in the foreground until it is unmounted (or gets SIGTERM/SIGINT, which unmounts).

``python -m tests.faultfs ctl SOCKET stats|writeback|ping`` sends one control command.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys


def ctl(socket_path: str, cmd: str) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(socket_path)
        s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            data = s.recv(1 << 20)
            if not data:
                break
            buf += data
    reply = json.loads(buf)
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["ctl"]:
        parser = argparse.ArgumentParser(prog="python -m tests.faultfs ctl")
        parser.add_argument("socket")
        parser.add_argument("cmd", choices=["stats", "writeback", "ping"])
        args = parser.parse_args(argv[1:])
        return ctl(args.socket, args.cmd)
    parser = argparse.ArgumentParser(prog="python -m tests.faultfs")
    parser.add_argument("mountpoint")
    parser.add_argument("backing")
    parser.add_argument("--control", help="Unix socket for stats/writeback commands")
    parser.add_argument("--debug", action="store_true", help="libfuse request tracing")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s faultfs %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from .fs import run  # pyfuse3 is imported only here, in the file system process

    run(args.mountpoint, args.backing, args.control, debug=args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
