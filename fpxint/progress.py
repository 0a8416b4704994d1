"""Progress callbacks: the engine reports long work as `progress(fraction, text)`, fraction in [0, 1].

The CLI turns the calls into tqdm bars, the app into `st.progress`; a notebook may pass nothing.
"""
from __future__ import annotations

from typing import Callable

Progress = Callable[[float, str], None]


def quiet(fraction: float, text: str = "") -> None:
    """The callback used when none is given."""


def stage(progress: Progress | None, i: int, n: int, text: str = "") -> Progress:
    """Maps a callback's [0, 1] onto stage i of n of `progress` (engine callbacks report per stage)."""
    p = progress or quiet
    return lambda f, t="": p((i + f) / n, f"{text} {t}".strip())
