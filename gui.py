"""The web GUI: ``python gui.py`` serves http://127.0.0.1:7860 for the current folder (docs/gui.md).

    python gui.py [--port 7860] [--root FOLDER] [--listen HOST [--token TOKEN]] [--notify_command PROGRAM ARG ...]

--listen 0.0.0.0 makes it reachable from other machines; then every request needs the token
(generated and printed unless --token is given). Training runs are separate processes: closing the
GUI does not stop them, and starting it again re-attaches to them. --notify_command (last on the line:
every word after it belongs to it) runs when a job ends, with {name} {status} {error} {url} ... replaced
(webui/notify.py), e.g. --notify_command notify-send "lorasmith: {name} {status}" "{error}".
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
    p.add_argument("--notify_command", nargs=argparse.REMAINDER, default=None, metavar="PROGRAM ARG",
                   help="run this program when a job ends (last option: the words after it are its argument list, never "
                        "a shell line); {id} {name} {kind} {status} {exit_code} {error} {step} {total} {run_dir} {url} "
                        "in an argument are replaced, and LORASMITH_JOB_* environment variables carry the same")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.isdir(args.root):
        print(f"error: --root {args.root} is not a folder", file=sys.stderr)
        return 2
    from library.errors import UserError
    from webui.notify import check_command

    try:
        notify = check_command(args.notify_command)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import uvicorn

    from webui.app import create_app
    from webui.security import new_token

    host = args.listen or "127.0.0.1"
    token = args.token or (new_token() if args.listen else None)
    if args.token and not args.listen:
        token = args.token  # a token on localhost is allowed (shared machines)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown}:{args.port}"
    app = create_app(args.root, token=token, notify_command=notify, base_url=base)  # {url}: never with the token
    url = f"{base}/" + (f"?token={token}" if token else "")
    print(f"lorasmith GUI for {os.path.abspath(args.root)}: open {url}", flush=True)
    if token:
        print(f"token: {token}  (API callers send it as the X-Token header)", flush=True)
    uvicorn.run(app, host=host, port=args.port, log_level="warning", timeout_graceful_shutdown=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
