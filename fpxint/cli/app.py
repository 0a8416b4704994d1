"""`fpxint app`: starts the Streamlit app of the installed package (no checkout needed).

    fpxint app                                  # http://localhost:8501, stop with Ctrl+C
    fpxint app --port 8502 --address 0.0.0.0    # serve a room
    fpxint app --shared /data/fpxint-shared     # checkpoints and CIFAR-10 / ImageNet images
    fpxint app -- --server.headless true        # anything after -- goes to `streamlit run`

It runs `python -m streamlit run <fpxint>/app/script/fpxint_app.py` in a child process (Streamlit's own
command line, its public interface), with the shared folder passed on as FPXINT_SHARED.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the `app` subcommand to fpxint's subparsers."""
    p = subparsers.add_parser("app", help="start the Streamlit app (needs the app extra: pip install 'fpxint[app]')",
                              description=__doc__.split("\n\n")[0], epilog="Stop the server with Ctrl+C.")
    p.add_argument("--port", type=int, help="port to serve on (Streamlit's default: 8501)")
    p.add_argument("--address", help="address to serve on, e.g. 0.0.0.0 for every interface (default: all)")
    p.add_argument("--shared", metavar="DIR", help="the shared folder with checkpoints and evaluation images "
                   "(default: $FPXINT_SHARED, else ../shared beside a checkout)")
    p.add_argument("streamlit_args", nargs=argparse.REMAINDER, metavar="-- STREAMLIT_OPTIONS",
                   help="options for `streamlit run` after --, e.g. -- --server.headless true")
    p.set_defaults(run=run)
    return p


def command(args) -> list[str]:
    """The `streamlit run` command line of these arguments."""
    script = Path(str(files("fpxint.app") / "script" / "fpxint_app.py"))
    extra = list(args.streamlit_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    if args.port is not None:
        extra += ["--server.port", str(args.port)]
    if args.address is not None:
        extra += ["--server.address", args.address]
    return [sys.executable, "-m", "streamlit", "run", str(script), *extra]


def run(args) -> int:
    """Runs `fpxint app` until the server stops; returns Streamlit's exit code (0 after Ctrl+C)."""
    from .args import UsageError

    if importlib.util.find_spec("streamlit") is None:
        raise UsageError("the app needs Streamlit and plotly: pip install 'fpxint[app]'")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port (1..65535)")
    env = dict(os.environ)
    if args.shared:
        shared = Path(args.shared).expanduser()
        if not shared.is_dir():
            raise UsageError(f"--shared {args.shared}: no such folder")
        env["FPXINT_SHARED"] = str(shared.resolve())  # the app reads the shared folder from its environment
    cmd = command(args)
    print(f"fpxint app: streamlit run {cmd[4]} {' '.join(cmd[5:])}; stop it with Ctrl+C", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the terminal sent Ctrl+C to both processes: Streamlit stops on its own
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
        return 0
