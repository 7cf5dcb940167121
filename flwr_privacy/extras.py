"""Optional extras: which layer needs which library, and the error that names the fix.

The core (``pip install flower-privacy``) holds the wrappers, records, SecAgg+ and
validation and needs only Flower, numpy and ``cryptography``. Each other layer's
libraries come with an extra; a layer used without its extra raises
:class:`MissingExtraError` naming the ``pip install`` line, not a bare
``ModuleNotFoundError`` from deep inside the layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["EXTRAS", "MissingExtraError", "requires"]

# extra -> the top-level modules it installs (pyproject.toml [project.optional-dependencies])
EXTRAS: dict[str, tuple[str, ...]] = {
    "he": ("tenseal", "phe", "gmpy2"),
    "dp": ("torch", "opacus", "opendp"),
    "robust": ("sklearn",),
    "attacks": ("torch", "torchmetrics", "scipy", "sklearn"),
}


class MissingExtraError(ImportError):
    """A layer's library is not installed; the message names the extra that installs it."""


@contextmanager
def requires(extra: str, layer: str) -> Iterator[None]:
    """Imports inside the block belong to ``extra``; a missing one names ``pip install``.

    Parameters
    ----------
    extra : str
        The extra of ``flower-privacy`` that installs the block's libraries.
    layer : str
        What needs them, for the message (e.g. ``"CKKS (flwr_privacy.he.ckks)"``).
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    try:
        yield
    except ImportError as e:
        if isinstance(e, MissingExtraError):
            raise
        missing = (e.name or "").split(".")[0] or "a library"
        raise MissingExtraError(
            f"{layer} needs {missing!r}, which is not installed: "
            f'pip install "flower-privacy[{extra}]"',
            name=e.name,
        ) from e
