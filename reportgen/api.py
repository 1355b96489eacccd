"""The Python API: what the command line does, for notebooks and scripts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .build import BuildResult, build
from .config import load_config
from .site import states
from .site.states import SiteState


def build_site(
    input_dir: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = False,
    config_file: str | os.PathLike[str] | None = None,
    **options: Any,
) -> BuildResult:
    """Build the site for the photos in ``input_dir`` into ``out_dir``.

    Args:
        input_dir: the folder of photos (searched recursively).
        out_dir: where the site goes (default ``site``).
        progress: show progress bars on stderr.
        config_file: a YAML file of options; ``options`` given here win over it.
        **options: any other build option, by its :class:`~reportgen.config.Config` name, with
            the values the command line takes (``weights="random"``, ``layers=("conv1",
            "conv3")``, ``batch_size=32``, …).

    Returns:
        What the build produced: the photos' records, the skipped files, what was computed.

    Raises:
        ConfigError: an unknown option or a bad value (every one is named), before any work.
        ReportgenError: anything else the user can fix; the previous site is left whole.
    """
    given = {"input_dir": input_dir, "out_dir": out_dir, **options}
    config = load_config(
        {k: v for k, v in given.items() if v is not None},
        Path(config_file) if config_file is not None else None,
    )
    # Idle OpenMP threads spin by default, taking the cores that decode photos and encode
    # pictures: passive waiting made builds 7% faster on 2 cores. It must be set before torch is
    # first imported (by the build, only if the model is needed); a user's setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return build(config, progress=progress)


def sites() -> list[SiteState]:
    """The sites reportgen keeps state for (manifest, stat index, records and the default cache;
    under ``~/.cache/reportgen/sites``, or ``$REPORTGEN_HOME/sites``), each with where it was
    last built, whether it is still there, and the bytes its state takes."""
    return states.site_states()


def prune_sites(
    found: list[SiteState] | None = None,
) -> tuple[list[SiteState], list[SiteState]]:
    """Remove reportgen's state for the sites that are gone (deleted, or moved and not built
    since; a site moved and built again takes its state along instead). The state of a site
    still there, of one on a disk that is not mounted now, or of one made before reportgen
    recorded where its site is, is kept.

    Args:
        found: what :func:`sites` gave, if the caller has it (each is checked again before it
            is removed); listed anew otherwise.

    Returns:
        The states removed, and those kept because a build was using them.
    """
    return states.prune(states.site_states() if found is None else found)
