"""How much a restorer improves its distorted inputs: PSNR / SSIM against the pristine crops."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from tqdm.auto import tqdm

from diffiqa.diffusion.chain import Chain
from diffiqa.diffusion.samplers import generator_noise, run_chain, to_image_space, to_model_space
from diffiqa.errors import ConfigError

log = logging.getLogger(__name__)


def restore_batch(net, distorted01: torch.Tensor, chain: Chain, generator=None) -> torch.Tensor:
    """(N,3,H,W) float in [0,1] -> restored (N,3,H,W) float in [0,1] (final chain state, clamped)."""
    cond = to_model_space(distorted01)
    return to_image_space(run_chain(net, cond, chain, generator_noise(cond, generator) if generator is not None else None))


def _scores(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """a, b: (3,H,W) uint8 -> (PSNR dB, SSIM). Identical images give PSNR inf; capped at 100 dB."""
    a, b = a.transpose(1, 2, 0), b.transpose(1, 2, 0)
    with np.errstate(divide="ignore"):
        psnr = min(peak_signal_noise_ratio(a, b, data_range=255), 100.0)
    ssim = structural_similarity(a, b, channel_axis=-1, data_range=255, win_size=min(7, a.shape[0] | 1, a.shape[1] | 1))
    return float(psnr), float(ssim)


def _pooled_psnr(mse: pd.Series) -> float:
    return float(min(10 * np.log10(255.0**2 / max(float(mse.mean()), 1e-10)), 100.0))


def _summary(df: pd.DataFrame) -> dict:
    out = {"n": int(len(df))}
    for m in ("psnr", "ssim"):
        out[f"{m}_distorted"] = float(df[f"{m}_distorted"].mean())
        out[f"{m}_restored"] = float(df[f"{m}_restored"].mean())
        out[f"{m}_gain"] = out[f"{m}_restored"] - out[f"{m}_distorted"]
    # PSNR of the mean squared error over the crops: not dominated by the few near-identical
    # crops whose per-crop PSNR is huge (capped at 100 dB), as the mean of PSNRs is.
    out["pooled_psnr_distorted"] = _pooled_psnr(df["mse_distorted"])
    out["pooled_psnr_restored"] = _pooled_psnr(df["mse_restored"])
    out["pooled_psnr_gain"] = out["pooled_psnr_restored"] - out["pooled_psnr_distorted"]
    return out


def evaluate_restorer(
    net, distorted: np.ndarray, pristine: np.ndarray, meta: pd.DataFrame, chain: Chain,
    batch_size: int = 16, seed: int = 0, progress: bool = True, device=None,
) -> dict:
    """PSNR/SSIM of restored vs pristine and of distorted vs pristine, overall and per type.

    distorted, pristine: (N,3,S,S) uint8; meta: DataFrame with a ``distortion`` column,
    row i <-> arrays[i]. Noise is drawn from a generator seeded by (seed, batch index), so the
    result does not depend on what ran before. Returns {"overall": {...}, "per_distortion":
    {type: {...}}, "crops_per_s" (sampling only), "sampler", "steps", "t_start"} (``chain``'s);
    each summary holds n,
    psnr/ssim of distorted and restored (means) and their gains (restored - distorted).
    """
    if len(distorted) != len(pristine) or len(distorted) != len(meta):
        raise ConfigError(f"evaluate_restorer: {len(distorted)} distorted, {len(pristine)} pristine, {len(meta)} meta rows")
    device = torch.device(device or next(net.parameters()).device)
    net = net.to(device).eval()
    rows = []
    sampling_seconds = 0.0
    batches = range(0, len(distorted), batch_size)
    for b, start in enumerate(tqdm(batches, disable=not progress, desc=f"eval {chain.sampler}-{chain.steps}", unit="batch")):
        d = distorted[start : start + batch_size]
        gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + b)
        t0 = time.perf_counter()
        restored = restore_batch(net, torch.from_numpy(d).float().to(device) / 255, chain, gen)
        restored = (restored * 255).round().to(torch.uint8).cpu().numpy()
        sampling_seconds += time.perf_counter() - t0
        for i in range(len(d)):
            p = pristine[start + i]
            psnr_d, ssim_d = _scores(d[i], p)
            psnr_r, ssim_r = _scores(restored[i], p)
            rows.append({"distortion": str(meta["distortion"].iloc[start + i]), "psnr_distorted": psnr_d,
                         "psnr_restored": psnr_r, "ssim_distorted": ssim_d, "ssim_restored": ssim_r,
                         "mse_distorted": float(np.mean((d[i].astype(np.float64) - p) ** 2)),
                         "mse_restored": float(np.mean((restored[i].astype(np.float64) - p) ** 2))})
    df = pd.DataFrame(rows)
    result = {
        "sampler": chain.sampler,
        "t_start": chain.t_start,
        "steps": chain.steps,
        "overall": _summary(df),
        "per_distortion": {k: _summary(g) for k, g in df.groupby("distortion", sort=True)},
        "crops_per_s": len(df) / sampling_seconds if sampling_seconds else None,
    }
    log.info("restorer %s: %s", chain.label(), result["overall"])
    return result
