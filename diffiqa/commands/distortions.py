"""``diffiqa distortions``: the KADID-10k type table and the 25x5 contact sheet."""

from __future__ import annotations

MIN_CELL, MAX_CELL = 16, 1024  # 25 x 5 cells of 1024 px are already a 5120 x 25600 sheet


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
    p.add_argument("--cell", type=int, default=96, help=f"cell size in pixels, {MIN_CELL}..{MAX_CELL} (default 96)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the random types")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from diffiqa.data.distortions import contact_sheet, describe
    from diffiqa.errors import ConfigError
    from diffiqa.io_utils import check_output_file

    if not args.list and not args.sheet:
        raise ConfigError("diffiqa distortions: give --list and/or --sheet FILE.png")
    if args.sheet:  # checked before anything is drawn (or listed)
        if not MIN_CELL <= args.cell <= MAX_CELL:
            raise ConfigError(f"--cell {args.cell}: must be {MIN_CELL}..{MAX_CELL} pixels")
        if Path(args.sheet).suffix.lower() != ".png":
            raise ConfigError(f"--sheet {args.sheet}: the sheet is a PNG; give a .png file name")
        check_output_file(args.sheet, "--sheet", inputs=[args.image] if args.image else [])
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
        contact_sheet(image, args.sheet, cell_px=args.cell, seed=args.seed)
        print(f"wrote {args.sheet}")
    return 0
