"""``clawpen image build``: the agent image, and a variant for each other engine in use."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..config import read_yaml
from .common import DEFAULT_CONFIG, ConfigOption, guard

app = typer.Typer(no_args_is_help=True, help="The agent image.")


@app.command("build")
def image_build(
    tag: Annotated[
        str | None, typer.Option(help="Image tag (default: the config's image).")
    ] = None,
    base: Annotated[
        str, typer.Option(help="auto, debootstrap, or an image reference to build FROM.")
    ] = "auto",
    engine: Annotated[
        list[str] | None,
        typer.Option(help="Also build this engine's variant (default: those the agents use)."),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Build the agent image the config names (``image:``), on its ``docker_host`` (no
    registry needed: falls back to a debootstrap base), and the variant of every other engine
    its agents use (``engine: claude-code``)."""
    # Imported here: the Docker SDK is slow to import and only this command needs it.
    from ..runtime.docker import connect
    from ..runtime.image import build_agent_image, build_engine_image, engine_tag

    raw = guard(lambda: read_yaml(config)) if config.exists() else {}
    image = tag or str(raw.get("image") or "clawpen-agent:latest")
    docker_host = raw.get("docker_host")
    listed = raw.get("agents")
    agents: list[Any] = listed if isinstance(listed, list) else []
    used = {str(a.get("engine")) for a in agents if isinstance(a, dict) and a.get("engine")}
    engines = sorted((set(engine or []) | used) - {"light"})

    def progress(line: str) -> None:
        print(line, flush=True)

    def build() -> str:
        return build_agent_image(connect(docker_host), tag=image, base=base, progress=progress)

    image_id = guard(build)
    print(f"built {image} ({image_id[:19]})")
    for name in engines:

        def build_variant(name: str = name) -> str:
            client = connect(docker_host)
            return build_engine_image(
                client, name, tag=image, base=base, progress=progress, agent_image_built=True
            )

        variant_id = guard(build_variant)
        print(f"built {engine_tag(image, name)} ({variant_id[:19]})")
