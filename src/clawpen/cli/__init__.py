"""The `clawpen` command (`main.py`) and what it shows: the chat terminal, status views, the log
viewer, `init`, the service unit.
"""

import os
import sys

if sys.argv[1:2] == ["run"]:
    # The orchestrator logs JSON lines and lives long: structlog would import rich (for a
    # terminal's tracebacks) and typer would (for --help and errors), about 2.5 MB of it for
    # nothing; `clawpen run --help` is then plain text. The adapters' processes do the same
    # (channels/runner.py, zygote.py).
    os.environ["TYPER_USE_RICH"] = "0"
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
