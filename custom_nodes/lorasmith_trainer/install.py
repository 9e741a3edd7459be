"""Install OpenCV for the node pack only when ComfyUI's Python has none (ComfyUI-Manager runs this file).

Why not a line in requirements.txt: OpenCV ships as four distributions (``opencv-python``,
``opencv-python-headless`` and their ``-contrib-`` twins) that all install the same ``cv2`` folder. Many
node packs require ``opencv-python``; a second flavour installed on top overwrites part of its files and
breaks ``import cv2`` for every pack (the known "partially initialized module 'cv2'" failure). lorasmith
needs only ``cv2.resize`` (kohya's INTER_AREA downscale), which every flavour has, so any one installed is
used as it is, and only an environment with none gets ``opencv-python-headless`` at the tested version
(``constraints.txt``).

    <ComfyUI's python> install.py            # install it if no OpenCV is there
    <ComfyUI's python> install.py --check    # only say what would be done
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

FLAVOURS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
CHOICE = "opencv-python-headless"  # no GUI libraries needed on a server
HERE = os.path.dirname(os.path.abspath(__file__))


def installed_flavours(version_of=metadata.version) -> list:
    """The OpenCV distributions present in this Python (normally zero or one)."""
    found = []
    for name in FLAVOURS:
        try:
            found.append(f"{name}=={version_of(name)}")
        except metadata.PackageNotFoundError:
            pass
    return found


def install_command(python: str = sys.executable) -> list:
    """pip's argument list for the one flavour, constrained to the tested version."""
    return [python, "-m", "pip", "install", CHOICE, "-c", os.path.join(HERE, "constraints.txt")]


def main(argv=None, version_of=metadata.version, run=subprocess.run) -> int:
    argv = sys.argv[1:] if argv is None else argv
    found = installed_flavours(version_of)
    if found:
        print(f"lorasmith: OpenCV is installed ({', '.join(found)}); using it, nothing to install")
        return 0
    command = install_command()
    if "--check" in argv:
        print("lorasmith: no OpenCV installed; would run: " + " ".join(command))
        return 0
    print("lorasmith: no OpenCV installed; running: " + " ".join(command))
    return run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
