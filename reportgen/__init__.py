"""reportgen: a static website showing how a pretrained AlexNet sees a folder of photographs.

import reportgen
result = reportgen.build_site("inputs", "site", weights="random")
"""

from __future__ import annotations

__version__ = "0.2.0"

from .api import build_site  # noqa: E402 (after __version__, which the modules it imports read)
from .build import BuildResult  # noqa: E402
from .errors import ReportgenError  # noqa: E402

__all__ = ["BuildResult", "ReportgenError", "__version__", "build_site"]
