"""Classify frames during a Pycro-Manager acquisition (image_process_fn).

    python examples/pycromanager_hook.py BUNDLE            # simulated: no microscope needed
    python examples/pycromanager_hook.py BUNDLE --live     # with Micro-Manager running

Pycro-Manager calls ``image_process_fn(image, metadata)`` on its processing thread for
every frame and saves the ``(image, metadata)`` it returns. ``PycroManagerHook`` submits
the frame to the classifier without blocking; if the call is ready within ``wait_s``
it is written into the frame's metadata (``EdgeIAPP-Class``, ``-Confidence``,
``-Review``...) and saved with the image, otherwise the metadata says ``pending`` and
the call arrives in ``hook.results``.

Without ``--live`` (and in CI, where pycromanager is not installed) this script calls
the hook itself with synthetic frames, exactly as Pycro-Manager would.
"""

from __future__ import annotations

import argparse

from embed_predict import synthetic_crop

from edge_iapp import Classifier
from edge_iapp.runtime.pycromanager import PycroManagerHook


def simulated_acquisition(hook: PycroManagerHook, frames: int) -> list[dict]:
    """What Pycro-Manager does: one call per frame, metadata with the frame's axes."""
    saved = []
    for t in range(frames):
        image = synthetic_crop(seed=t)
        metadata = {"Axes": {"time": t}, "Camera": "Simulated"}
        image, metadata = hook(image, metadata)
        saved.append(metadata)
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--live", action="store_true", help="acquire with pycromanager")
    args = parser.parse_args()

    with Classifier(args.bundle, backend="onnxruntime", precision="fp32") as clf:
        # wait_s=1.0: the acquisition thread waits up to 1 s per frame for the call.
        hook = PycroManagerHook(clf, wait_s=1.0)
        if args.live:
            from pycromanager import Acquisition, multi_d_acquisition_events

            with Acquisition(directory="edge_iapp_acq", name="run", image_process_fn=hook) as acq:
                acq.acquire(multi_d_acquisition_events(num_time_points=args.frames))
            saved = []
        else:
            saved = simulated_acquisition(hook, args.frames)
        hook.drain(timeout=60)  # calls that were still pending when their frame was saved
    for metadata in saved:
        keys = {k: v for k, v in metadata.items() if k.startswith("EdgeIAPP-")}
        print(f"frame {metadata['Axes']['time']}: {keys}")
    print(f"{len(hook.results)} frames classified, {len(hook.errors)} errors")
    return 0 if len(hook.results) == args.frames and not hook.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
