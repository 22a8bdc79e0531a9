"""Does restoration guidance add information? A linear probe on the restored part of a cache.

    python benchmarks/guidance_probe.py CACHE PREPARED_DIR [distorted,restored,noisy_1,noisy_2]

For every single-tile image of a (possibly unfinished) whole-image restore cache: pooled
frozen Lite0 + Lite2 cell features of the distorted image (d) and the differences d - r,
d - n1, d - n2; ridge (k-fold CV, ``diffiqa.training.ridge``) on [d] vs [d + differences] over
10 random 4:1 splits of those images, with paired differences. The same features the scorer's
skip path reads, so it says what guidance can add before any head is trained.
"""
import sys, time
from pathlib import Path

import numpy as np, pandas as pd, torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scipy.stats import spearmanr

from diffiqa.cache import read_cache
from diffiqa.scorer.backbones import build_backbone
from diffiqa.training.ridge import fold_ids, ridge_cv

torch.set_num_threads(1)
KINDS = sys.argv[3].split(',') if len(sys.argv) > 3 else ['distorted', 'restored', 'noisy_1', 'noisy_2']
c = read_cache(sys.argv[1], require_complete=False)
done = np.flatnonzero(c.done[:] if hasattr(c.done,'__getitem__') else c.done)
rows = c.rows[done]
keep = [i for i, r in zip(done, rows) if (c.rows == r).sum() == 1]  # single-tile images only
print('restored single-tile images:', len(keep), flush=True)
idx = pd.read_parquet(Path(sys.argv[2]) / 'index.parquet'); y = idx.quality.to_numpy()[c.rows[keep]]
nets = [build_backbone(n, pretrained='pypi', out_indices=(1,2,3,4,5), channels_last=True, cell_stats=True).eval() for n in ('tf_efficientnet_lite0','tf_efficientnet_lite2')]
P = {}
t = time.time()
with torch.no_grad():
    for kind in KINDS:
        out = []
        for i in keep:
            x = torch.from_numpy(np.ascontiguousarray(c.read(kind, np.array([i])))).float()
            f = torch.cat([torch.cat(n(x),1) for n in nets],1).flatten(2)
            out.append(torch.cat([f.mean(2), f.std(2)],1)[0].double().numpy())
        P[kind] = np.stack(out); print(kind, time.time()-t, flush=True)
d = P['distorted']
others = [k for k in KINDS if k != 'distorted']
sets = {'d': d}
for k in others:
    sets[f'd,d-{k}'] = np.concatenate([d, d - P[k]], 1)
if len(others) > 1:
    sets['d,' + ','.join(f'd-{k}' for k in others)] = np.concatenate([d] + [d - P[k] for k in others], 1)
res = {k: [] for k in sets}
for rep in range(10):
    f = fold_ids(len(y), 5, seed=100+rep)
    te = f == 0; tr = ~te
    for k, X in sets.items():
        fit = ridge_cv(X[tr], y[tr]); res[k].append(spearmanr(fit.predict(X[te]), y[te])[0])
base = np.array(res['d'])
for k, v in res.items():
    v = np.array(v); dd = v - base
    print(f"{k}: SRCC {v.mean():.3f} ± {v.std():.3f}; paired vs d {dd.mean():+.3f} ± {dd.std(ddof=1)/np.sqrt(len(dd)):.3f}, won {(dd>0).sum()}/10")
