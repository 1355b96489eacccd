"""The command line: parse arguments, build the config, call the library, report.

Exit codes: 0 success; 1 a build problem (or skipped files with --strict); 2 a usage or
configuration error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from . import __version__
from .api import build_site
from .build import BuildResult
from .config import DEFAULT_CONFIG_FILE, Config, default_config_file, load_config
from .errors import ReportgenError

PROG = "reportgen"


class _TqdmHandler(logging.Handler):
    """Log lines that do not break the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(f"{PROG}: {self.format(record)}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Turn a folder of photographs into a static website showing how a "
        "pretrained AlexNet sees each one.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    build = commands.add_parser(
        "build",
        help="build the site from a folder of photos",
        description="Run AlexNet over every photo in INPUT_DIR and write a static site to OUT_DIR. "
        f"Every option may also be set in a YAML file ({DEFAULT_CONFIG_FILE} in the current "
        "folder, or --config); the command line wins.",
    )
    for f in dataclasses.fields(Config):
        meta = f.metadata
        if f.name == "input_dir":
            build.add_argument("input_dir", nargs="?", metavar=meta["metavar"], help=meta["help"])
        elif f.type in ("bool", bool):
            build.add_argument(
                meta["flag"], dest=f.name, action="store_true", default=None, help=meta["help"]
            )
        else:
            build.add_argument(
                meta["flag"],
                dest=f.name,
                metavar=meta["metavar"],
                help=f"{meta['help']} (default: {_default_text(f)})",
            )
    build.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"YAML file of options (default: ./{DEFAULT_CONFIG_FILE} if present)",
    )
    return parser


def _default_text(f: dataclasses.Field) -> str:
    if f.metadata["default_text"] is not None:
        return f.metadata["default_text"]
    if f.default is None:
        return "auto"
    if isinstance(f.default, tuple):
        return ",".join(f.default)
    return str(f.default)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reportgen`` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command != "build":
        parser.print_help(sys.stderr)
        return 2

    cli_values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}
    config_file = args.config or default_config_file()
    try:
        # Read here for --quiet and --strict; build_site reads the same values again.
        config = load_config(cli_values, config_file)
    except ReportgenError as exc:
        _error(str(exc))
        return exc.exit_code

    _setup_logging()
    progress = not config.quiet and sys.stderr.isatty()
    options = {k: v for k, v in cli_values.items() if v is not None}
    try:
        result = build_site(config_file=config_file, progress=progress, **options)
    except ReportgenError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted; finished photos are cached for the next build")
        return 130
    if not config.quiet:
        print(f"{PROG}: {_summary(result)}", file=sys.stderr)
    if config.strict and result.skipped:
        _error(f"{len(result.skipped)} file(s) skipped (--strict)")
        return 1
    return 0


def _summary(result: BuildResult) -> str:
    """One line saying what the build did."""
    skipped = f", {len(result.skipped)} skipped" if result.skipped else ""
    if result.computed:
        work = f"{result.computed} computed on {result.device}, {result.reused} from the cache"
    else:
        work = "all from the cache"
    return (
        f"wrote {len(result.photos)} photo pages ({work}){skipped} to "
        f"{result.out_dir / 'index.html'}"
    )


def _setup_logging() -> None:
    logger = logging.getLogger(PROG)
    logger.handlers[:] = [_TqdmHandler()]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
