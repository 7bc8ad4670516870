"""Images/s of ONE reader process on the CPU: the earlier input path against the new one.

Not a test. Reads the image shards benchmarks/train_vision.py writes (the sample images,
raw uint8 HWC, ``--images`` at ``--size`` px) the way the vision trainer does
(``RecordDataset(bytes_as="uint8", feature_spec=image_spec(labels=True))``, shuffled,
``drop_last``) through a DataLoader with ONE worker, for ``--epochs`` epochs, and consumes
the batches in the main process (``decode_images``: uint8 NHWC views). Two paths:

  old: fresh workers every epoch (``loop_epochs``: a DataLoader iteration per epoch) and
       image bytes as one ``bytes`` per image, copied into a packed array, copied again
       into shared memory by the worker's result queue;
  new: one DataLoader iteration for every epoch (``records.epoch_stream.EpochStream`` +
       ``loop_stream``: the worker lives across epochs) and image bytes copied once, from
       the record buffer into one preallocated uint8 batch array in shared memory.

Each path runs ``--runs`` times, alternating; it prints images/s (median, min-max), the
ratio new/old, the epoch-start stall (the wait for the first batch of epochs 2.. ), and
one JSON line prefixed ``RESULT``. With ``--workers 0`` it times decoding alone, in process.

    python benchmarks/vision_reader.py --out /tmp/sf-vision-reader            # 4096 x 64 px
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmarks.train_vision import write_dataset  # noqa: E402
from models.data import loop_epochs, loop_stream  # noqa: E402
from models.vision_data import decode_images, image_spec  # noqa: E402
from records.epoch_stream import EpochStream  # noqa: E402
from records.reader import RecordDataset  # noqa: E402


def run(path: str, uri: str, args) -> dict:
    """One timed pass of ``--epochs`` epochs; images/s and the epoch-start stalls."""
    ds = RecordDataset(uri, "train", batch_size=args.batch_size, shuffle=True, seed=0,
                       drop_last=True, feature_spec=image_spec(labels=True), bytes_as="uint8",
                       threads=1)
    ds.byte_spans = path == "new"
    per_epoch = len(ds)
    loader_kw = dict(batch_size=None, num_workers=args.workers, prefetch_factor=4) \
        if args.workers else None
    if path == "new":
        stream = EpochStream(ds, epochs=args.epochs)
        batches = loop_stream(ds, DataLoader(stream, **loader_kw) if loader_kw else stream)
    else:
        class PerEpoch:  # a new DataLoader iteration (fresh worker) every epoch
            def __iter__(self):
                return iter(DataLoader(ds, **loader_kw) if loader_kw else ds)
        batches = loop_epochs(ds, 0, iterable=PerEpoch())
    images, stalls = 0, []
    t0 = last = time.perf_counter()
    for i in range(per_epoch * args.epochs):
        batch = next(batches)
        now = time.perf_counter()
        if i and i % per_epoch == 0:
            stalls.append(now - last)  # the wait for the first batch of a new epoch
        last = now
        x, _ = decode_images(batch, labels=True)
        images += x.shape[0]
    wall = time.perf_counter() - t0
    return {"images_per_s": images / wall, "epoch_start_s": statistics.median(stalls or [0.0])}


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/shardforge-vision-reader", help="where the shards go")
    p.add_argument("--images", type=int, default=4096, help="train images")
    p.add_argument("--size", type=int, default=64, help="image side in px")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers (0 = in process)")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    uri = write_dataset(args.out, size=args.size, count=args.images,
                        eval_count=args.batch_size)
    rows: dict[str, list[dict]] = {"old": [], "new": []}
    run("new", uri, args)  # warm the page cache and the imports
    for _ in range(args.runs):
        for path in ("old", "new"):
            rows[path].append(run(path, uri, args))
    result = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "torch": torch.__version__, **{k: v for k, v in vars(args).items() if k != "out"}}
    for path, runs in rows.items():
        rate = summary([r["images_per_s"] for r in runs])
        stall = summary([r["epoch_start_s"] for r in runs])
        result[path] = {"images_per_s": rate, "epoch_start_s": stall}
        print(f"{path}: {rate['median']:>8,.0f} images/s (min {rate['min']:,.0f}, max "
              f"{rate['max']:,.0f})  epoch-start wait {stall['median'] * 1e3:.0f} ms",
              file=sys.stderr)
    ratio = result["new"]["images_per_s"]["median"] / result["old"]["images_per_s"]["median"]
    result["ratio_new_over_old"] = ratio
    print(f"new/old: {ratio:.2f}x images/s per reader process", file=sys.stderr)
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
