"""Run restore_dataset in its own process (for the kill -9 and concurrent-shard tests).

    python tests/restore_worker.py JOB.json

JOB.json: {"index_csv", "root", "store", "checkpoint", "params": {...}, "shard": [i, n],
"delay_s": seconds to wait before each shard write (slows the run so a test can kill it
between shards; 0 = none)}.
"""

import json
import sys
import time

import pandas as pd
import torch

from diffiqa.cache import Cache
from diffiqa.config import from_dict
from diffiqa.restore import RestoreParams, restore_dataset


def main(job_path: str) -> int:
    job = json.loads(open(job_path).read())
    torch.set_num_threads(1)
    delay = float(job.get("delay_s", 0))
    if delay:
        real_write = Cache.write_shard

        def slow_write(self, shard_id, arrays):
            time.sleep(delay)
            real_write(self, shard_id, arrays)

        Cache.write_shard = slow_write
    params = from_dict(RestoreParams, job["params"], "restore")
    summary = restore_dataset(
        pd.read_csv(job["index_csv"]), job["root"], job["store"], job["checkpoint"], params,
        shard=tuple(job.get("shard", (0, 1))), progress=False, device="cpu",
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
