"""Schemes by name: the one list that the command line, the experiments and the scikit-learn
wrappers accept.

Each name builds a scheme with the settings the comparisons use: uncoded, ignore-stragglers
and LWPD (the library default: each worker its shard, streaming its partial derivatives in
chunks) do about one unit of compute per worker and step; replication and gradient coding do
two, LCC ``N / K``. ``iag`` and ``lwpd-memory`` keep every row's latest value across steps;
``randk`` is random-k ignore-stragglers at half the floats; ``lwpd-fr`` pairs workers on the
same data with complementary bases (an even number of workers).

Examples
--------
>>> from lwpd.schemes.registry import NAMES, make_scheme
>>> "lwpd" in NAMES
True
>>> make_scheme("ignore", n_workers=8).wait_for
0.75
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from lwpd import _defaults
from lwpd._validation import check_choice, check_int
from lwpd.schemes._base import Scheme
from lwpd.schemes._data_parallel import IgnoreStragglers, Replication, Uncoded
from lwpd.schemes._gradient_coding import GradientCoding
from lwpd.schemes._lcc import LCC
from lwpd.schemes._lwpd import LWPD, RandomK
from lwpd.schemes._partial_gc import PartialGradientCoding
from lwpd.schemes._replicated import ReplicatedLWPD

#: The fraction of its work a partial-decoding scheme waits for (``wait_for``) when built by name.
WAIT_FOR = _defaults.WAIT_FOR


class Entry(NamedTuple):
    """How a named scheme is built and where it applies."""

    build: Callable[[int, int, int], Scheme]  #: (n_workers, block_size, max_weight) -> scheme
    least_squares_only: bool = False  #: LCC encodes data polynomially: least squares alone


def _lcc(n_workers: int, block_size: int, max_weight: int) -> Scheme:
    # K data blocks so that a quarter of the workers may straggle: N >= 2K - 1 + S
    return LCC(max(1, (n_workers - max(1, n_workers // 4) + 1) // 2))


SCHEMES: dict[str, Entry] = {
    "uncoded": Entry(lambda n, b, w: Uncoded()),
    "ignore": Entry(lambda n, b, w: IgnoreStragglers(wait_for=WAIT_FOR)),
    "iag": Entry(lambda n, b, w: IgnoreStragglers(wait_for=WAIT_FOR, memory=True)),
    "randk": Entry(lambda n, b, w: RandomK(share=0.5)),
    "replication": Entry(lambda n, b, w: Replication(2 if n % 2 == 0 else 1)),
    "gc-frc": Entry(lambda n, b, w: GradientCoding(1 if n % 2 == 0 else 0, kind="frc")),
    "gc-cyclic": Entry(lambda n, b, w: GradientCoding(1, kind="cyclic")),
    "gc-partial": Entry(lambda n, b, w: PartialGradientCoding(1)),
    "lcc": Entry(_lcc, least_squares_only=True),
    "lwpd": Entry(lambda n, b, w: LWPD(block_size=b, max_weight=w, wait_for=WAIT_FOR)),
    "lwpd-memory": Entry(lambda n, b, w: LWPD(block_size=b, max_weight=w, wait_for=WAIT_FOR, memory=True)),
    "lwpd-fr": Entry(lambda n, b, w: ReplicatedLWPD(block_size=b)),
}

#: Every scheme name, in the order tables list them.
NAMES: tuple[str, ...] = tuple(SCHEMES)

#: The schemes ``lwpd run`` compares unless told otherwise.
DEFAULT_NAMES: tuple[str, ...] = ("uncoded", "ignore", "replication", "gc-cyclic", "gc-partial", "lwpd")


def names(least_squares: bool = True) -> tuple[str, ...]:
    """The scheme names that apply to a problem (``least_squares=False``: a classifier's)."""
    return tuple(name for name, entry in SCHEMES.items() if least_squares or not entry.least_squares_only)


def make_scheme(name: str, n_workers: int, *, block_size: int = 8, max_weight: int = 2) -> Any:
    """A fresh scheme by name (see the module notes for what each name builds).

    Parameters
    ----------
    name : str
        One of :data:`NAMES`.
    n_workers : int
        Workers it will run on (replication, fractional-repetition gradient coding and LCC
        size themselves by it).
    block_size, max_weight : int, default 8, 2
        Shape of the LWPD codebooks (``"lwpd"``, ``"lwpd-memory"``; ``block_size`` also
        ``"lwpd-fr"``).

    Returns
    -------
    Scheme
    """
    check_choice("name", name, NAMES)
    n_workers = check_int("n_workers", n_workers, minimum=1)
    return SCHEMES[name].build(n_workers, block_size, max_weight)
