"""`diffiqa prepare ADAPTER --root DIR --out DIR`: a native dataset -> index.parquet + splits.json.

Thin over `diffiqa.data.prepare.prepare_dataset`; see docs/datasets.md for each adapter's root.
"""

from __future__ import annotations

ADAPTER_NAMES = ["live", "csiq", "tid2013", "kadid10k", "clive", "koniq10k", "pipal", "spaq", "folder", "demo"]


def add_parser(sub) -> None:
    p = sub.add_parser("prepare", help="index a dataset in its native layout and make content-disjoint splits")
    p.add_argument("adapter", choices=ADAPTER_NAMES, help="dataset layout")
    p.add_argument("--root", help="dataset folder (see docs/datasets.md); not needed for demo")
    p.add_argument("--out", required=True, help="output folder for index.parquet and splits.json")
    p.add_argument("--protocol", default="8:2", choices=["8:2", "7:1:2", "6:2:2"],
                   help="train:(val:)test ratio by content (8:2 cuts val from train)")
    p.add_argument("--splits", type=int, default=10, help="number of random splits, 1..100 (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first split (split k uses seed+k)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="for 8:2: share of training contents held out for validation (default 0.1)")
    p.add_argument("--allow-missing-images", action="store_true",
                   help="drop labelled images that are not on disk (counted in the summary) instead of failing")
    p.add_argument("--no-check-images", action="store_true", help="skip decoding every image once")
    p.add_argument("--labels", help="folder adapter: CSV with columns image, mos[, content, distortion, level]")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--higher-better", dest="higher_better", action="store_const", const=True,
                           help="folder adapter: higher mos = better quality (MOS)")
    direction.add_argument("--lower-better", dest="higher_better", action="store_const", const=False,
                           help="folder adapter: lower mos = better quality (DMOS)")
    p.add_argument("--resolution", help="koniq10k: image folder, 1024x768 (default when present) or 512x384")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run, higher_better=None)


def run(args) -> int:
    import json

    from diffiqa.data.prepare import check_split_options, prepare_dataset
    from diffiqa.errors import ConfigError
    from diffiqa.io_utils import check_output_dir

    # Cheap checks first: nothing is read or decoded when an option or the output is wrong.
    check_split_options(args.splits, args.seed, args.val_fraction)
    if args.adapter != "demo" and not args.root:
        raise ConfigError(f"prepare {args.adapter}: --root is required (the dataset folder)")
    if args.adapter != "folder" and (args.labels or args.higher_better is not None):
        raise ConfigError("--labels, --higher-better and --lower-better are for the folder adapter only")
    options = {}
    if args.resolution:
        if args.adapter != "koniq10k":
            raise ConfigError("--resolution is for the koniq10k adapter only")
        options["resolution"] = args.resolution
    check_output_dir(args.out, "--out")
    summary = prepare_dataset(
        args.adapter,
        root=args.root,
        out=args.out,
        protocol=args.protocol,
        n_splits=args.splits,
        seed=args.seed,
        allow_missing_images=args.allow_missing_images,
        labels=args.labels,
        higher_better=args.higher_better,
        val_fraction=args.val_fraction,
        check_images=not args.no_check_images,
        progress=not args.no_progress,
        **options,
    )
    print(json.dumps(summary, indent=2))
    return 0
