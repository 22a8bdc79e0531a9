"""`diffiqa profile NAME`: switch params.yaml to a profile (demo, cpu, paper).

The profile files live in `pipeline/profiles/<name>.yaml` of the working copy. The command
rewrites `params.yaml` from one of them, so DVC sees a profile switch as changed params and
reruns exactly the stages whose params differ.
"""

from __future__ import annotations

from pathlib import Path

PROFILE_DIR = Path("pipeline/profiles")


def add_parser(sub) -> None:
    p = sub.add_parser("profile", help="switch params.yaml to a profile (demo, cpu, paper)")
    p.add_argument("name", nargs="?", help="profile name; omit to list the profiles")
    p.add_argument("--params", default="params.yaml", help="params file to rewrite")
    p.add_argument("--profiles", default=str(PROFILE_DIR), help="folder of <name>.yaml profiles")
    p.set_defaults(run=run)


def run(args) -> int:
    import yaml

    from diffiqa.errors import ConfigError
    from diffiqa.io_utils import check_output_file, write_text_atomic

    folder = Path(args.profiles)
    available = sorted(q.stem for q in folder.glob("*.yaml"))
    if not available:
        raise ConfigError(f"{folder}: no profiles found (run this in the diffiqa working copy)")
    params = check_output_file(args.params, "--params") if args.name else Path(args.params)
    current = None
    if params.is_file():
        try:
            data = yaml.safe_load(params.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{params}: cannot read as YAML ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        current = data.get("profile") if isinstance(data, dict) else None
    if not args.name:
        for name in available:
            print(("* " if name == current else "  ") + name)
        return 0
    if args.name not in available:
        raise ConfigError(f"unknown profile {args.name!r}; available: {', '.join(available)}")
    text = (folder / f"{args.name}.yaml").read_text()
    data = yaml.safe_load(text) or {}
    if data.get("profile") != args.name:
        raise ConfigError(f"{folder / args.name}.yaml: its `profile:` key must be {args.name!r}")
    write_text_atomic(params, text)
    print(f"params.yaml now holds the {args.name!r} profile (was {current!r}); run `dvc repro`.")
    return 0
