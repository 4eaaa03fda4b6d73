"""``clawpen run`` with a choice of agent runtime, for benchmarks that need the orchestrator in
its own process: ``python -m bench.orchestrator_proc --runtime inprocess --config FILE``.

Same wiring as ``clawpen run`` (settings, JSON logs on stdout, SIGTERM to stop); only the
runtime differs: ``inprocess`` runs the agents as threads of this process (no container).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clawpen.app import Orchestrator, run_until_signal
from clawpen.config import load_settings
from clawpen.obs import logging as clawpen_logging
from clawpen.runtime.inprocess import InProcessRuntime


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.orchestrator_proc")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--runtime", choices=("docker", "inprocess"), default="docker")
    args = parser.parse_args()
    settings = load_settings(args.config)
    clawpen_logging.configure(settings.log_level)
    runtime = (
        InProcessRuntime(settings.data_dir / "workspaces") if args.runtime == "inprocess" else None
    )
    run_until_signal(Orchestrator.open(settings, runtime=runtime))


if __name__ == "__main__":
    main()
