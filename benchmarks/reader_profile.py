"""Where the reader's time goes: cProfile of RecordDataset passes, grouped, in µs an example.

Not a test. Reads the dataset `benchmarks/reader.py` wrote (run that first, same --out) with
one decode thread and every CRC checked, times a plain pass, then profiles a few more and
sums each function's own time (tottime) into the reader's components.

    python benchmarks/reader_profile.py --out /tmp/sf-bench200 [--numpy-path]

``--numpy-path`` hides numba from the import system first: the path of a GPU host without it.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

COMPONENTS = [  # (component, substrings of function names whose own time it gets)
    ("packed varint decode", ["packed_varints", "_compiled_varints", "decode_varints",
                              "count_varints", "_general_varints", "method 'nonzero'",
                              "method 'take'", "method 'repeat'", "_fixed_values"]),
    ("CRC checks and framing", ["_IndexedPiece", "check_frames", "_bad_data", "check_data_crcs",
                                "check_headers", "_gather", "masked_crc32c_u64", "mask_array",
                                "fromiter", "deliver_checked", "_block", "__call__"]),
    ("Example structure walk", ["read_field", "read_varints", "_entries", "_match_keys",
                                "<listcomp>", "_fast", "_column", "walk_examples", "_walk"]),
    ("batch assembly", ["concat_columns", "slice_rows", "to_batch", "to_torch", "from_numpy",
                        "ascontiguousarray", "method 'join'", "_merge"]),
    ("file reads and .idx parsing", ["method 'read'", "fromstring", "read_index", "seek",
                                     "open"]),
]


class _NoNumba:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numba", "llvmlite"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/shardforge-bench")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--numpy-path", action="store_true")
    args = p.parse_args(argv)
    if args.numpy_path:
        sys.meta_path.insert(0, _NoNumba())
    from records.reader import RecordDataset

    uri = f"file://{os.path.abspath(args.out)}/records/bench/v=1"
    ds = RecordDataset(uri, "train", batch_size=args.batch_size, verify_crc=True, threads=1)

    def one_pass() -> int:
        return sum(b["tokens"].shape[0] for b in ds)
    one_pass()  # warm-up: page cache, numba's cached kernels
    t0 = time.perf_counter()
    n = one_pass()
    plain = (time.perf_counter() - t0) / n
    profile = cProfile.Profile()
    profile.enable()
    examples = sum(one_pass() for _ in range(args.passes))
    profile.disable()
    spent = {name: 0.0 for name, _ in COMPONENTS} | {"other numpy and Python": 0.0}
    for (_, _, fn), (_, _, own, _, _) in pstats.Stats(profile).stats.items():
        name = next((c for c, parts in COMPONENTS if any(x in fn for x in parts)),
                    "other numpy and Python")
        spent[name] += own
    total = sum(spent.values())
    print(f"plain pass {plain * 1e6:.2f} us an example ({1 / plain:,.0f}/s); "
          f"under cProfile {total / examples * 1e6:.2f}")
    for name, own in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:28s} {own / examples * 1e6:5.2f} us an example ({own / total:5.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
