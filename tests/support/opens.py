"""Which files a piece of code opens, seen through Python's own audit hook (`sys.addaudithook`):
every real `open`, whoever makes it, with nothing replaced."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The lists being filled (innermost last). A hook cannot be removed: one is added for the
# whole session, the first time it is needed, and does nothing while no list is open.
_watching: list[list[str]] = []
_hooked: list[bool] = []


def _note(event: str, args: tuple[Any, ...]) -> None:
    if _watching and event == "open" and isinstance(args[0], str | Path):
        _watching[-1].append(Path(args[0]).name)


@contextlib.contextmanager
def files_opened() -> Iterator[list[str]]:
    """The names of the files opened inside the block, in order, repeats included."""
    if not _hooked:
        sys.addaudithook(_note)
        _hooked.append(True)
    names: list[str] = []
    _watching.append(names)
    try:
        yield names
    finally:
        _watching.remove(names)
