"""The `paper` profile at full size on CPU (issue 12 item 7): one training step of the ~98 M
parameter restorer U-Net and one of the paper scorer (ViT-B/8 + ResNet50 at 224²), random
weights, to prove the shapes and record time and peak memory before a GPU run.

    OMP_NUM_THREADS=1 python benchmarks/paper_shapes.py [--part restorer|scorer|both] [--batch 2] [--crop 64]

Each part runs in its own process so its peak RSS (ru_maxrss of that child) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def restorer_step(batch: int, crop: int) -> dict:
    import torch

    from diffiqa.diffusion.presets import restorer_preset
    from diffiqa.diffusion.training import diffusion_loss
    from diffiqa.diffusion.unet import ConditionalUNet, count_parameters

    cfg = restorer_preset("paper")
    torch.manual_seed(0)
    net = ConditionalUNet(cfg.unet).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    x0, cond = torch.rand(batch, 3, crop, crop) * 2 - 1, torch.rand(batch, 3, crop, crop) * 2 - 1
    before = _rss_mb()
    t0 = time.perf_counter()
    loss = diffusion_loss(net, x0, cond, cfg.loss, torch.Generator().manual_seed(0), cfg.t_max, cfg.full_range_share,
                          cfg.distorted_start, cfg.mixed_start)
    opt.zero_grad()
    loss.backward()
    opt.step()
    step_s = time.perf_counter() - t0
    with torch.no_grad():
        t1 = time.perf_counter()
        out = net.eval()(x0, cond, torch.full((batch,), 0.5))
        fwd_s = time.perf_counter() - t1
    assert out.shape == x0.shape and torch.isfinite(loss)
    return {"part": "restorer (paper U-Net)", "parameters": count_parameters(net), "batch": batch, "crop": crop,
            "train_step_s": round(step_s, 2), "eval_forward_s": round(fwd_s, 2), "loss": float(loss),
            "rss_before_step_mb": round(before), "peak_rss_mb": round(_rss_mb())}


def scorer_step(batch: int) -> dict:
    import torch

    from diffiqa.scorer.model import build_scorer
    from diffiqa.scorer.presets import scorer_preset

    cfg = scorer_preset("paper", pretrained=False)
    torch.manual_seed(0)
    model = build_scorer(cfg, load_pretrained=False).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    imgs = {k: torch.rand(batch, 3, 224, 224) for k in ("distorted", "restored", "noisy_1", "noisy_2")}
    mos = torch.rand(batch)
    before = _rss_mb()
    t0 = time.perf_counter()
    pred = model(**imgs).reshape(-1)
    loss = torch.nn.functional.mse_loss(pred, mos)
    opt.zero_grad()
    loss.backward()
    opt.step()
    step_s = time.perf_counter() - t0
    assert pred.shape == (batch,) and torch.isfinite(loss)
    return {"part": "scorer (paper: ViT-B/8 + ResNet50, 224²)", "parameters": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in params), "batch": batch, "crop": 224, "train_step_s": round(step_s, 2),
            "loss": float(loss), "rss_before_step_mb": round(before), "peak_rss_mb": round(_rss_mb())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="both", choices=["restorer", "scorer", "both"])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--crop", type=int, default=64, help="restorer crop side")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    if args.part == "both":  # one child per part: separate peaks
        rows = []
        for part in ("restorer", "scorer"):
            cmd = [sys.executable, __file__, "--part", part, "--batch", str(args.batch), "--crop", str(args.crop)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
        import torch

        print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
        for r in rows:
            print(json.dumps(r))
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
        return 0
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    row = restorer_step(args.batch, args.crop) if args.part == "restorer" else scorer_step(args.batch)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
