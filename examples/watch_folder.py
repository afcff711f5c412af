"""The watched-folder service on a folder of synthetic captures, twice (a restart).

    python examples/watch_folder.py BUNDLE [WORKDIR]

For closed capture systems that can only write files. It writes three synthetic
chromosome crops and one broken file into WORKDIR/incoming, runs

    edge-iapp watch WORKDIR/incoming --bundle BUNDLE --out WORKDIR/out --once --settle 0

then adds one more image and runs it again: the second run classifies only the new
file (the processed-index in OUT remembers the rest). As a service, drop ``--once``
(it then polls until SIGTERM); deploy/jetson/ has the systemd unit.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
from embed_predict import synthetic_crop


def watch(incoming: Path, out: Path, bundle: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "edge_iapp.cli.main",
        "watch",
        str(incoming),
        "--bundle",
        bundle,
        "--out",
        str(out),
        "--once",
        "--settle",
        "0",
    ]
    print("$ edge-iapp", " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    bundle = argv[1]
    work = Path(argv[2]) if len(argv) > 2 else Path(tempfile.mkdtemp(prefix="edge_iapp_watch_"))
    incoming, out = work / "incoming", work / "out"
    incoming.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        cv2.imwrite(str(incoming / f"chr{i}.png"), synthetic_crop(seed=i))
    (incoming / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    watch(incoming, out, bundle)
    cv2.imwrite(str(incoming / "chr3.png"), synthetic_crop(seed=3))
    watch(incoming, out, bundle)  # only chr3.png is new

    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(out / "errors.csv", newline="") as fh:
        errors = list(csv.DictReader(fh))
    for row in rows:
        print(f"{row['file']}: class {row['class']} confidence {float(row['confidence']):.3f}")
    for row in errors:
        print(f"{row['file']}: ERROR {row['error']}")
    print(f"results in {out}")
    return 0 if len(rows) == 4 and len(errors) == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
