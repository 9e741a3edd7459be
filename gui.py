"""The web GUI: ``python gui.py`` serves http://127.0.0.1:7860 for the current folder (docs/gui.md).

    python gui.py [--port 7860] [--root FOLDER] [--listen HOST [--token TOKEN]]

--listen 0.0.0.0 makes it reachable from other machines; then every request needs the token
(generated and printed unless --token is given). Training runs are separate processes: closing the
GUI does not stop them, and starting it again re-attaches to them.
"""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    p.add_argument("--root", default=".", help="the folder the GUI may read and write (default: the current folder)")
    p.add_argument("--listen", metavar="HOST", default=None,
                   help="serve on HOST (e.g. 0.0.0.0) instead of 127.0.0.1; requires a token")
    p.add_argument("--token", default=None, help="the token remote callers send (X-Token header); generated if not given")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.isdir(args.root):
        print(f"error: --root {args.root} is not a folder", file=sys.stderr)
        return 2
    import uvicorn

    from webui.app import create_app
    from webui.security import new_token

    host = args.listen or "127.0.0.1"
    token = args.token or (new_token() if args.listen else None)
    if args.token and not args.listen:
        token = args.token  # a token on localhost is allowed (shared machines)
    app = create_app(args.root, token=token)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{args.port}/" + (f"?token={token}" if token else "")
    print(f"lorasmith GUI for {os.path.abspath(args.root)}: open {url}", flush=True)
    if token:
        print(f"token: {token}  (API callers send it as the X-Token header)", flush=True)
    uvicorn.run(app, host=host, port=args.port, log_level="warning", timeout_graceful_shutdown=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
