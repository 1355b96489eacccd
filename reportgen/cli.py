"""The command line: parse arguments, build the config, call the library, report.

Exit codes: 0 success; 1 a build problem (or skipped files with --strict); 2 a usage or
configuration error; 130 interrupted (Ctrl-C); 143 stopped by SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from . import __version__, interrupts
from .api import build_site, prune_sites, sites
from .build import BuildResult
from .config import DEFAULT_CONFIG_FILE, Config, default_config_file, load_config
from .errors import Interrupted, ReportgenError, os_error_message
from .files import size_text
from .site.states import SiteState, sites_home

PROG = "reportgen"


class _TqdmHandler(logging.Handler):
    """Log lines that do not break the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(f"{PROG}: {_printable(self.format(record))}", file=sys.stderr)


def _printable(text: str, *, lines: bool = False) -> str:
    """``text`` with each character a terminal would act on (escape sequences, other control
    characters, line breaks unless ``lines``) written as Python writes it in a string: a file's
    name is the user's photos' to choose, and its bytes must not reach the terminal as they are.
    (An error's own lines, a list of problems, are kept with ``lines``.)"""
    kept = "\n" if lines else ""
    return "".join(c if c.isprintable() or c in kept else repr(c)[1:-1] for c in text)


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
    _add_options(build)
    build.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"YAML file of options (default: ./{DEFAULT_CONFIG_FILE} if present)",
    )
    sites = commands.add_parser(
        "sites",
        help="list the sites reportgen keeps state for; --prune removes that of sites gone",
        description="List the sites reportgen keeps state for (the record of each build and, by "
        "default, its cache: about 90 KB a photo), where each was last built and the space its "
        "state takes. A site moved or renamed takes its state along at its next build.",
    )
    sites.add_argument(
        "--prune",
        action="store_true",
        help="remove the state of the sites that are no longer where they were built "
        "(deleted, moved and not built since, or never built to the end)",
    )
    for command in (build, sites):
        command.add_argument(
            "--debug", action="store_true", help="show the traceback of an internal error"
        )
    return parser


def _add_options(build: argparse.ArgumentParser) -> None:
    """A flag (or the positional INPUT_DIR) for each option of :class:`Config`."""
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
                action="append" if meta["repeated"] else "store",
                metavar=meta["metavar"],
                help=f"{meta['help']} (default: {_default_text(f)})",
            )


def _default_text(f: dataclasses.Field) -> str:
    if f.metadata["default_text"] is not None:
        return f.metadata["default_text"]
    if f.default is None:
        return "auto"
    if isinstance(f.default, tuple):
        return ",".join(f.default)
    return str(f.default)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reportgen`` command; returns the exit code.

    Every failure ends in one ``reportgen: error: …`` line: the library's own errors with their
    exit codes, file-system errors with what to do, and anything else (a bug) with the path of a
    log holding its traceback (shown instead with ``--debug``).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    commands = {"build": _build, "sites": _sites}
    if args.command not in commands:
        parser.print_help(sys.stderr)
        return 2
    try:
        return commands[args.command](args)
    except ReportgenError as exc:
        _error(str(exc))
        return exc.exit_code
    except Interrupted as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except OSError as exc:
        _error(os_error_message(exc))
        return 1
    except Exception:
        if args.debug:
            raise
        _error(_internal_error())
        return 1


def _build(args: argparse.Namespace) -> int:
    """``reportgen build``: the options, the library call, and the closing line."""
    cli_values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}
    config_file = args.config or default_config_file()
    # Read here for --quiet and --strict; build_site reads the same values again.
    config = load_config(cli_values, config_file)
    _setup_logging()
    progress = not config.quiet and sys.stderr.isatty()
    options = {k: v for k, v in cli_values.items() if v is not None}
    with _terminate_as_interrupt():
        result = build_site(config_file=config_file, progress=progress, **options)
    if not config.quiet:
        print(f"{PROG}: {_printable(_summary(result))}", file=sys.stderr)
    if config.strict and result.skipped:
        _error(f"{len(result.skipped)} file(s) skipped (--strict)")
        return 1
    return 0


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Stop the build on SIGTERM as on Ctrl-C, and exit 143 (128 + SIGTERM), as a process that
    SIGTERM ends does.

    ``kill``, ``timeout``, a CI job cancelled or a service stopped send SIGTERM. It would otherwise
    end the build at once, which is safe (its processes end with it; the site is swapped whole)
    but says nothing: this way the build says what it leaves, as on Ctrl-C. A second SIGTERM ends
    it at once. Nothing changes where SIGTERM is ignored, or off the main thread.
    """
    received: list[int] = []

    def stop(signum: int, frame: object) -> None:
        received.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt

    try:
        with interrupts.handling((signal.SIGTERM,), stop):
            yield
    except KeyboardInterrupt as exc:
        if not received:
            raise
        stopped = exc if isinstance(exc, Interrupted) else Interrupted("interrupted")
        stopped.exit_code = 128 + signal.SIGTERM
        raise stopped from None


def _sites(args: argparse.Namespace) -> int:
    """``reportgen sites [--prune]``: the sites' states, a line each, and what pruning frees."""
    found = sites()
    if args.prune:
        removed, busy = prune_sites(found)
        for state in removed:
            print(f"removed the state of {_shown(state.site)} (freed {size_text(state.own)})")
        for state in busy:
            print(f"kept the state of {_shown(state.site)}: a build is using it")
        found = [s for s in found if s not in removed]
    home = _shown(sites_home())
    if not found:
        print(f"no site's state is kept (in {home})")
        return 0
    for state in found:
        print(f"{size_text(state.size):>9}  {_where(state)}")
    print(f"{PROG} keeps the state of {_sites_count(found)} in {home}")
    gone = [s for s in found if s.gone]
    if gone and not args.prune:
        freed = size_text(sum(s.own for s in gone))
        count = _sites_count(gone)
        kinds = {"gone" if s.built else "never built" for s in gone}
        what = " or ".join(sorted(kinds))
        print(f"'{PROG} sites --prune' removes the state of the {count} {what}: frees {freed}")
    return 0


def _sites_count(states: list[SiteState]) -> str:
    return f"{len(states)} site{'' if len(states) == 1 else 's'}"


def _where(state: SiteState) -> str:
    """Which site a state is for, and whether it is still there."""
    if state.site is None:
        return f"{_shown(state.folder)}  (made by an earlier reportgen: its site is not recorded)"
    if state.away is not None:
        return (
            f"{_shown(state.site)}  (its disk is not mounted at {_shown(state.away)}: kept, in "
            f"{_shown(Path(state.folder.name))})"
        )
    if not state.present:
        why = "gone: no site there now" if state.built else "never built: no build of it finished"
        return f"{_shown(state.site)}  ({why}; pruning frees {size_text(state.own)})"
    return _shown(state.site)


def _shown(path: Path) -> str:
    """A path as given, or quoted when it holds characters a terminal would act on."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def _internal_error() -> str:
    """Keep the traceback of the exception being handled in a log file; say where."""
    exc = sys.exc_info()[1]
    summary = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    try:
        fd, path = tempfile.mkstemp(prefix="reportgen-error-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"reportgen {__version__}, Python {sys.version.split()[0]}\n")
            fh.write(traceback.format_exc())
        where = f"the traceback is in {path}"
    except OSError:
        where = "run again with --debug to see the traceback"
    return f"internal error ({summary}); please report this: {where}"


def _summary(result: BuildResult) -> str:
    """One line saying what the build did."""
    pages = f"{len(result.photos)} photo page{'' if len(result.photos) == 1 else 's'}"
    if result.computed:
        work = f"{result.computed} computed on {result.device}, {result.reused} from the cache"
    else:
        work = "all from the cache"
    count = len(result.skipped)
    skipped = f"; {count} file{'' if count == 1 else 's'} skipped (see above)" if count else ""
    size = size_text(result.site_bytes)
    return f"wrote {pages} ({work}) to {result.out_dir / 'index.html'} ({size}){skipped}"


def _setup_logging() -> None:
    logger = logging.getLogger(PROG)
    logger.handlers[:] = [_TqdmHandler()]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _error(message: str) -> None:
    print(f"{PROG}: error: {_printable(message, lines=True)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
