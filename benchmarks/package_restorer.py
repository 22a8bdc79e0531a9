"""Package a trained restorer as diffiqa/assets/default_restorer.pt (float16, provenance).

    python benchmarks/package_restorer.py /work/R_run/cpu/train/last.pt --t-start 0.2 --steps 2 \
        [--sampler ddim] [--out diffiqa/assets/default_restorer.pt] [--note "..."]

``src`` is a restorer.pt or a training state (last.pt: its EMA weights). The chain given here
is recorded in the checkpoint and is what ``diffiqa restore`` runs by default.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from diffiqa.diffusion.chain import Chain  # noqa: E402
from diffiqa.diffusion.checkpoint import PACKAGED_RESTORER, package_restorer  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("--out", default=str(PACKAGED_RESTORER))
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--t-start", type=float, default=0.2)
    ap.add_argument("--pairs-summary", help="summary.json of the training pairs (recorded as provenance)")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    prov = {"packaged": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "source": str(args.src), "note": args.note}
    if args.pairs_summary:
        s = json.loads(Path(args.pairs_summary).read_text())
        prov["data"] = {k: s[k] for k in ("types", "levels", "type_levels", "augment", "crop_size", "n_train",
                                          "train_images", "heldout_sources", "seed") if k in s}
    extra = package_restorer(args.src, args.out, Chain(args.sampler, args.steps, 0.0, args.t_start), prov)
    print(f"{args.out}: {extra['steps']} steps, {extra['parameters']:,} parameters, "
          f"chain {args.sampler}-{args.steps} from t={args.t_start:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
