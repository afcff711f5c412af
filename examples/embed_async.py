"""Call the classifier from several threads without blocking them: submit + callback.

    python examples/embed_async.py BUNDLE [--threads 4] [--frames 6]

Capture software calls the classifier from its own threads (camera callbacks, Qt
workers). ``submit`` queues the images and returns a ``concurrent.futures.Future`` at
once; a worker thread batches queued requests, and the callback runs on that worker
when the call is done (keep it short: in a Qt application emit a signal from it).
When the classifier falls behind, the bounded queue pushes back: ``submit`` blocks,
or raises ``QueueFull`` after ``timeout`` seconds, and the caller decides (drop the
frame, retry, slow the acquisition). Nothing is dropped silently.
"""

from __future__ import annotations

import argparse
import threading

from embed_predict import synthetic_crop

from edge_iapp import Classifier
from edge_iapp.runtime.executor import QueueFull


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--frames", type=int, default=6, help="frames per thread")
    args = parser.parse_args()

    calls: dict[tuple[int, int], str] = {}
    lock = threading.Lock()

    bundle = args.bundle
    with Classifier(bundle, backend="onnxruntime", precision="fp32") as clf:
        # The queue behind submit(): at most 16 waiting requests, then back-pressure.
        queue = clf.start_queue(max_queue=16)

        def camera(cam: int) -> None:
            for frame in range(args.frames):
                image = synthetic_crop(seed=cam * 100 + frame)

                def on_done(future, key=(cam, frame)) -> None:
                    # Runs on the classifier's worker thread.
                    if future.exception() is not None:
                        label = f"error: {future.exception()}"
                    else:
                        label = future.result()[0].class_name
                    with lock:
                        calls[key] = label

                try:
                    clf.submit(image, callback=on_done, timeout=30)
                except QueueFull as exc:  # back-pressure: this demo just reports it
                    with lock:
                        calls[(cam, frame)] = f"dropped: {exc}"

        threads = [threading.Thread(target=camera, args=(c,)) for c in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Leaving the with block closes the classifier: it drains the queue first, so
        # every callback has run when we get here.
    total = args.threads * args.frames
    for key in sorted(calls):
        print(f"camera {key[0]} frame {key[1]}: {calls[key]}")
    lat = queue.latency_stats()  # submit to result, queue wait included
    print(
        f"latency per call: p50 {lat['p50_ms']:.0f} ms, p95 {lat['p95_ms']:.0f} ms "
        f"over {lat['calls']} calls"
    )
    print(f"{len(calls)}/{total} frames called back ({bundle})")
    return 0 if len(calls) == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
