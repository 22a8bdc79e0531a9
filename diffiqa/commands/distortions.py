"""``diffiqa distortions``: the KADID-10k type table and the 25x5 contact sheet."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "distortions",
        help="list the 25 KADID-10k distortion types or draw their contact sheet",
        description="Show the distortion library: --list prints the type table, --sheet draws "
        "every type (rows) at levels 1-5 (columns) on one image.",
    )
    p.add_argument("--list", action="store_true", help="print the type table")
    p.add_argument("--sheet", metavar="FILE.png", help="write the 25x5 contact sheet here")
    p.add_argument("--image", metavar="IMG", help="image for the sheet (default: scikit-image's astronaut)")
    p.add_argument("--cell", type=int, default=96, help="cell size in pixels (default 96)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the random types")
    p.set_defaults(run=run)


def run(args) -> int:
    from diffiqa.data.distortions import contact_sheet, describe
    from diffiqa.errors import ConfigError

    if not args.list and not args.sheet:
        raise ConfigError("diffiqa distortions: give --list and/or --sheet FILE.png")
    if args.list:
        print(f"{'id':>2}  {'name':28s} {'parameter':38s} levels 1..5")
        for row in describe():
            levels = ", ".join(f"{v:g}" for v in row["levels"])
            print(f"{row['id']:>2}  {row['name']:28s} {row['parameter']:38s} {levels}")
    if args.sheet:
        if args.image:
            from diffiqa.data.image_io import load_image

            image = load_image(args.image)
        else:
            from skimage import data

            image = data.astronaut()
        if args.cell < 16:
            raise ConfigError(f"--cell {args.cell}: must be at least 16 pixels")
        contact_sheet(image, args.sheet, cell_px=args.cell, seed=args.seed)
        print(f"wrote {args.sheet}")
    return 0
