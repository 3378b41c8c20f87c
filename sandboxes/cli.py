"""`agentgym sandbox ...`: build sandbox images and the bubblewrap root offline, list every sandbox, remove orphans."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from agentgym.sandboxes.factory import available_backends

sandbox_app = typer.Typer(help="Sandboxes: images, listing, clean-up.", no_args_is_help=True)
_out = Console(soft_wrap=True)


@sandbox_app.command("build-image")
def build_image_command(
    name: Annotated[str, typer.Argument(help="Image name to build, e.g. agentgym/sandbox:swe.")],
    python: Annotated[bool, typer.Option("--python/--no-python", help="Include Debian's python3.")] = True,
    pip: Annotated[Optional[list[str]], typer.Option("--pip", help="A pip requirement to install from wheels (repeatable).")] = None,
    apt: Annotated[Optional[list[str]], typer.Option("--apt", help="A Debian package to include (repeatable).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild from scratch, cached root filesystem included.")] = False,
) -> None:
    """Build a sandbox image with no registry (debootstrap + docker import); a no-op when it is up to date."""
    from agentgym.sandboxes.images import build_image, engine

    started = time.monotonic()
    client = engine()
    tag = build_image(name, python=python, pip=pip or [], apt=apt or [], force=force, client=client)
    image = client.images.get(tag)
    _out.print(f"{tag} {image.id} ({time.monotonic() - started:.1f}s)", highlight=False)


@sandbox_app.command("prepare-rootfs")
def prepare_rootfs_command() -> None:
    """Make the Debian root bubblewrap sandboxes run on (debootstrap once, then unpacked); a no-op when it is ready."""
    from agentgym.sandboxes.rootfs import project_rootfs

    started = time.monotonic()
    root = project_rootfs()
    _out.print(f"{root} ({time.monotonic() - started:.1f}s)", highlight=False)


@sandbox_app.command("ls")
def ls_command() -> None:
    """List every sandbox of every available backend, whichever process made it."""
    table = Table("id", "backend", "owner pid", "owner alive", "age", "status")
    now = time.time()
    for backend in available_backends():
        for info in sorted(backend.list(), key=lambda i: i.created):
            table.add_row(info.id, info.backend, str(info.owner_pid), "yes" if info.owner_alive else "no",
                          _age(now - info.created), info.status)
    _out.print(table)


@sandbox_app.command("gc")
def gc_command() -> None:
    """Remove every sandbox whose owning process is gone, on every available backend."""
    backends = available_backends()
    if not backends:
        _out.print("no sandbox backend is available here: nothing to clean up")
    for backend in backends:
        removed = backend.gc()
        _out.print(f"{backend.name}: removed {len(removed)} sandbox{'es' if len(removed) != 1 else ''}", highlight=False)


def _age(seconds: float) -> str:
    """A short human age: 42s, 7m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
