"""The record of a training run: per step loss, time, compute, floats and what happened to
every task (:class:`History`, returned by :func:`lwpd.train`), and its JSON form."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["History", "strict_json"]

_FIELDS = ("time", "loss", "grad_error", "received", "dropped", "staleness", "compute", "floats", "decode_time",
           "dispatched", "failed", "rejected", "excluded", "late", "unverified", "skipped", "oldest", "lr")
_COUNTS = ("received", "dropped", "dispatched", "failed", "rejected", "excluded", "late", "unverified", "skipped")
_SETUP = ("setup_time", "setup_compute", "setup_floats", "outstanding", "initial_loss")
_FAULTS = ("dispatched", "failed", "rejected", "excluded", "late", "unverified", "skipped")
_OPTIONAL = _FAULTS + ("oldest", "lr")  # fields a record may leave out (counts 0, the rest nan)


@dataclass
class History:
    """Per-step record of a training run.

    One entry per step in each list: ``time`` (cluster time at the end of the step,
    simulated or wall seconds), ``loss`` (full objective after the step), ``grad_error``
    (``||g_hat - g|| / ||g||`` of the decoded gradient against the exact one, computed for
    diagnostics only; ``nan`` when nothing could be decoded), ``received`` (results folded
    in), ``dropped`` (tasks still outstanding when the step ended, then cancelled, or with
    ``policy="async"`` results dropped as too stale), ``staleness`` (mean parameter-version
    lag of the folded results; 0 for synchronous steps; for a scheme with memory, the
    weighted mean age of the values its estimate used, see :func:`train`), ``oldest`` (age
    in steps of the oldest value the step used: the largest lag, or for a scheme with
    memory its oldest row), ``lr`` (the step size applied; for a quasi-Newton step the
    line search's length along its direction), ``compute`` (units of compute of
    the tasks dispatched in the step, all workers together, by :mod:`lwpd.cost`),
    ``floats`` (floats sent by the results received in the step) and ``decode_time``
    (wall-clock seconds the master spent folding results in and decoding the estimate).

    What happened to every task is counted, so nothing is lost or counted twice:
    ``dispatched`` (tasks submitted in the step), ``failed`` (tasks that raised, or that
    their executor lost, e.g. a Dask worker that died while running them too often; never
    folded), ``rejected`` (results that arrived but were refused before folding: not finite,
    :meth:`Scheme.accepts`, or without the structure its task promises: a
    :class:`~lwpd.schemes.MalformedResult`), ``excluded`` (results folded in but left out of the decode by a
    robust decoder, as corrupted; they are also counted in ``received``), ``late`` (results
    folded in this step that were computed at an earlier step: a scheme with memory lets a
    busy worker's task run on across steps; they are also counted in ``received``, in the
    step they arrived), ``unverified`` (blocks the step's estimate could not check against
    corrupted values -- a robust decoder with too few codewords beyond a block's rank -- and so
    left out, or took unchecked with ``unverified="use"``; a count of blocks, not of
    tasks), ``skipped`` (1 when the step's decoded estimate was not finite and was not
    applied, else 0). For synchronous steps without memory ``dispatched == received +
    failed + rejected + dropped``; with ``policy="async"`` or memory the sums over the run
    balance the same way once ``outstanding`` (tasks still running when the run ended, then
    cancelled) is added to the right-hand side: every task is counted once, when it ends.

    ``setup_time``, ``setup_compute`` and ``setup_floats`` record a scheme's one-off setup
    (e.g. moment encoding; zero for most schemes); its time is included in ``time``.
    ``initial_loss`` is the loss at the starting parameters, at time 0 (``nan`` when not
    recorded): :meth:`curve` and :meth:`plot` start every curve there, so curves of several
    schemes share their first point. ``scheme`` names the scheme; ``theta`` holds the final
    parameters.
    """

    scheme: str = ""
    time: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    grad_error: list = field(default_factory=list)
    received: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    staleness: list = field(default_factory=list)
    compute: list = field(default_factory=list)
    floats: list = field(default_factory=list)
    decode_time: list = field(default_factory=list)
    setup_time: float = 0.0
    setup_compute: float = 0.0
    setup_floats: float = 0.0
    outstanding: float = 0.0
    initial_loss: float = math.nan
    dispatched: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    rejected: list = field(default_factory=list)
    excluded: list = field(default_factory=list)
    late: list = field(default_factory=list)
    unverified: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    oldest: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    #: Parameters at the end of the run (not saved by :meth:`save`).
    theta: Any = field(default=None, repr=False, compare=False)

    def record(self, **values: float) -> None:
        """Append one step: every field of :data:`_FIELDS` (the counts ``dispatched``,
        ``failed``, ``rejected``, ``excluded``, ``late``, ``unverified`` and ``skipped`` default to 0, ``oldest`` and ``lr``
        to nan)."""
        unknown = set(values) - set(_FIELDS)
        if unknown:
            raise TypeError(f"History.record got unknown fields {sorted(unknown)}; fields are {list(_FIELDS)}")
        missing = [name for name in _FIELDS if name not in values and name not in _OPTIONAL]
        if missing:
            raise TypeError(f"History.record needs the fields {missing}")
        for name in _FIELDS:
            value = values.get(name, 0 if name in _FAULTS else math.nan)
            getattr(self, name).append(int(value) if name in _COUNTS else float(value))

    def totals(self) -> dict[str, float]:
        """The run's totals: steps, compute units and floats (setup included), decode seconds.

        Examples
        --------
        >>> h = History(scheme="demo")
        >>> h.record(time=1.0, loss=0.5, grad_error=0.0, received=4, dropped=0, staleness=0.0,
        ...          compute=4.0, floats=40, decode_time=0.001)
        >>> h.totals()["compute"]
        4.0
        """
        return {
            "steps": len(self),
            "compute": self.setup_compute + float(sum(self.compute)),
            "floats": self.setup_floats + float(sum(self.floats)),
            "decode_time": float(sum(self.decode_time)),
            **{name: int(sum(getattr(self, name))) for name in _FAULTS},
        }

    def __len__(self) -> int:
        return len(self.time)

    def time_to(self, loss: float) -> float:
        """First time the loss is at or below ``loss`` (0 when the initial loss already is);
        ``inf`` if never."""
        for t, value in zip(*self.curve()):
            if value <= loss:
                return float(t)
        return math.inf

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """``(time, loss)`` from the initial point (time 0, :attr:`initial_loss`) when it was
        recorded, then one point per step.

        Examples
        --------
        >>> h = History(scheme="demo", initial_loss=2.0)
        >>> h.record(time=1.5, loss=0.5, grad_error=0.0, received=4, dropped=0, staleness=0.0,
        ...          compute=4.0, floats=40, decode_time=0.001)
        >>> [a.tolist() for a in h.curve()]
        [[0.0, 1.5], [2.0, 0.5]]
        """
        if math.isnan(self.initial_loss):
            return np.asarray(self.time, dtype=float), np.asarray(self.loss, dtype=float)
        return np.array([0.0, *self.time]), np.array([self.initial_loss, *self.loss])

    def as_dict(self) -> dict[str, Any]:
        """Plain lists, ready for JSON."""
        return {"scheme": self.scheme, **{name: list(getattr(self, name)) for name in _FIELDS},
                **{name: getattr(self, name) for name in _SETUP}}

    def save(self, path: str | Path) -> None:
        """Write the history as strict JSON: a value that is not a finite number (a NaN
        gradient error, an infinite time) is written as ``null``; :meth:`load` reads it back
        as NaN."""
        Path(path).write_text(strict_json(self.as_dict()))

    @classmethod
    def load(cls, path: str | Path) -> "History":
        """Read a history written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        steps = len(data["time"])

        def numbers(values: Any) -> Any:  # null (not a finite number when saved) -> NaN
            return math.nan if values is None else [math.nan if v is None else v for v in values] \
                if isinstance(values, list) else values

        # files written before a field existed: NaN per step (zero for the fault counts and
        # the one-off setup)
        return cls(scheme=data.get("scheme", ""),
                   **{name: numbers(data.get(name, [0 if name in _FAULTS else math.nan] * steps)) for name in _FIELDS},
                   **{name: numbers(data.get(name, math.nan if name == "initial_loss" else 0.0)) for name in _SETUP})

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Loss against time (log scale) from the initial point on ``ax`` (a new figure if
        ``None``); returns ``ax``."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        ax.plot(*self.curve(), label=kwargs.pop("label", self.scheme), **kwargs)
        ax.set_xlabel("time")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        return ax


def strict_json(data: Any, **dumps: Any) -> str:
    """``data`` as strict JSON (RFC 8259, which has no NaN or Infinity): every float that is
    not finite becomes ``null``. Used for every JSON file lwpd writes."""

    def clean(value: Any) -> Any:
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(item) for item in value]
        return value

    return json.dumps(clean(data), allow_nan=False, **dumps)
