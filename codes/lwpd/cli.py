"""The ``lwpd`` command.

``lwpd codebook --dim 3 --q 3 [--max-weight W] [--compress N --criterion coherence]`` prints a
projective codebook (optionally compressed) and its metrics table.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

import numpy as np

from lwpd import _defaults
from lwpd._compress import compress
from lwpd.constructions import projective_codebook
from lwpd.metrics import summary
from lwpd.schemes import registry

_CRITERIA = ("coherence", "frame_potential", "mutual_information", "logdet")


def _format_entry(value: float) -> str:
    rounded = round(value)
    if abs(value - rounded) >= 1e-12:
        return f"{value:+.4f}"
    return f"{int(rounded):+d}" if rounded else "0"


def _codeword_lines(dense: np.ndarray, indices: np.ndarray) -> list[str]:
    width = len(str(int(indices.max()))) if indices.size else 1
    lines = []
    for j, row in zip(indices, dense):
        entries = " ".join(f"{_format_entry(v):>3}" for v in row)
        lines.append(f"  v{j:<{width}d}  weight {int(np.count_nonzero(row))}  [ {entries} ]")
    return lines


def _metrics_lines(metrics: dict[str, float]) -> list[str]:
    labels = {
        "n_codewords": "codewords",
        "max_weight": "max weight",
        "coherence": "coherence",
        "welch_bound": "Welch bound",
        "min_angle_deg": "min angle (deg)",
        "frame_potential": "frame potential",
    }
    width = max(len(v) for v in labels.values())
    out = []
    for key, label in labels.items():
        value = metrics[key]
        text = f"{value:d}" if isinstance(value, (int, np.integer)) else f"{value:.6f}"
        out.append(f"  {label:<{width}}  {text:>12}")
    return out


#: The library's argument names, as the flags a command-line user typed.
_FLAGS = {"dim": "--dim", "q": "--q", "max_weight": "--max-weight", "n_codewords": "--compress",
          "placement": "--placement"}


def _as_flags(message: str) -> str:
    name = message.split(" ", 1)[0]
    return _FLAGS[name] + message[len(name):] if name in _FLAGS else message


def _cmd_codebook(args: argparse.Namespace) -> int:

    try:
        shown = projective_codebook(args.dim, q=args.q, max_weight=args.max_weight, normalize=False)
        kept = np.arange(shown.n_codewords)
        title = f"PG({args.dim - 1}, {args.q})" + (f", weight <= {args.max_weight}" if args.max_weight else "")
        if args.compress is not None:
            compressed = compress(shown, args.compress, criterion=args.criterion)
            # compress returns codewords of the input; find which, to print their indices
            lookup = {row.tobytes(): j for j, row in enumerate(shown.to_dense())}
            kept = np.array([lookup[row.tobytes()] for row in compressed.to_dense()])
            shown = compressed
            title += f", compressed to {args.compress} by {args.criterion}"
    except (ValueError, TypeError) as exc:
        print(f"lwpd codebook: error: {_as_flags(str(exc))}", file=sys.stderr)
        return 2
    metrics = summary(shown.normalized())
    print(f"{title}: {shown.n_codewords} codewords in R^{shown.dim} (integer representatives)")
    print("\n".join(_codeword_lines(shown.to_dense(), kept)))
    print()
    print("metrics (codewords as unit-norm lines)")
    print("\n".join(_metrics_lines(metrics)))
    return 0


def _security(args: argparse.Namespace) -> Any:
    """The ``distributed.security.Security`` the --tls-* flags describe, or None."""
    files = {"--tls-ca-file": args.tls_ca_file, "--tls-cert": args.tls_cert, "--tls-key": args.tls_key}
    if not any(files.values()):
        return None
    missing = [flag for flag, path in files.items() if not path]
    if missing:
        raise ValueError(f"TLS needs --tls-ca-file, --tls-cert and --tls-key together; missing {', '.join(missing)}")
    absent = [f"{flag} {path}" for flag, path in files.items() if not os.path.isfile(path)]
    if absent:
        raise ValueError(f"no such file: {'; '.join(absent)}")
    from distributed.security import Security

    return Security(tls_ca_file=args.tls_ca_file, tls_client_cert=args.tls_cert, tls_client_key=args.tls_key,
                    require_encryption=True)


def _cmd_run(args: argparse.Namespace) -> int:
    from lwpd import _experiment
    from lwpd.placement import PLACEMENTS

    try:
        schemes = tuple(name.strip() for name in args.schemes.split(","))
        unknown = [name for name in schemes if name not in registry.NAMES]
        if unknown or not schemes or len(set(schemes)) < len(schemes):
            raise ValueError(f"--schemes takes distinct names, comma-separated, from {', '.join(registry.NAMES)}; got {args.schemes!r}")
        if args.placement.partition(":")[0] not in PLACEMENTS:  # the library's message also offers index arrays
            raise ValueError(f"--placement must be iid, sorted or dirichlet:alpha=A (A > 0); got {args.placement!r}")
        if not 0 <= args.seed < 2**32:
            raise ValueError(f"--seed must be an integer in [0, 2**32 - 1], got {args.seed}")
        if args.workers < 2:
            raise ValueError(f"--workers must be >= 2, got {args.workers}")
        if args.max_steps < 1:
            raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
        if not args.latency >= 0:
            raise ValueError(f"--latency must be >= 0 (time per result message), got {args.latency}")
        if not args.bandwidth > 0:
            raise ValueError(f"--bandwidth must be > 0 (floats per time unit; inf for free), got {args.bandwidth}")
        outcomes = _experiment.run(
            dataset=args.dataset, model=args.model, schemes=schemes, workers=args.workers,
            stragglers=args.stragglers, policy=args.policy, backend=args.backend, seed=args.seed,
            max_steps=args.max_steps, latency=args.latency, bandwidth=args.bandwidth, out=args.out, progress=not args.quiet,
            dask_address=args.dask_address, placement=args.placement, dask_security=_security(args),
        )
    except (ValueError, TypeError, ImportError, ConnectionError) as exc:
        print(f"lwpd run: error: {_as_flags(str(exc))}", file=sys.stderr)
        return 2
    network = "compute only" if args.latency == 0 and args.bandwidth == float("inf") else \
        f"latency {args.latency:g}, bandwidth {args.bandwidth:g} floats per time unit"
    # the default placement goes unsaid, so the first line of a default run reads as it always has
    placement = "" if args.placement == "iid" else f", placement {args.placement}"
    print(f"{args.dataset}, {args.workers} workers{placement}, stragglers {args.stragglers}, "
          f"policy {args.policy}, backend {args.backend}, seed {args.seed}, costs (lwpd.cost): {network}")
    print(_experiment.table(outcomes))
    print(f"\nwrote {args.out}/results.json and {args.out}/loss_vs_time.png")
    return 0


class _HelpWithDefaults(argparse.HelpFormatter):
    """``--help`` that ends each option with its default, unless the help already says it or
    there is none (argparse's own formatter also prints ``(default: None)``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # (identity, not ==: a default of 0 is shown, False of a flag is not)
        if "default" in text or action.required or any(action.default is x for x in (None, False, argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)".lstrip()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lwpd`` command."""
    import lwpd

    parser = argparse.ArgumentParser(
        prog="lwpd",
        description="Lightweight projective derivative codes for coded, compressed, asynchronous gradient descent.",
    )
    parser.add_argument("--version", action="version", version=f"lwpd {lwpd.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    cb = sub.add_parser(
        "codebook",
        help="print a projective codebook PG(dim-1, q) and its metrics",
        description="Print the points of PG(dim-1, q) lifted to integer codewords, and a metrics table.",
        formatter_class=_HelpWithDefaults,
    )
    cb.add_argument("--dim", type=int, required=True, help="dimension k of the vector space (codewords in R^k)")
    cb.add_argument("--q", type=int, default=3, help="field size, a prime (default 3: entries in {0, +1, -1})")
    cb.add_argument("--max-weight", type=int, default=None, help="keep codewords of Hamming weight <= W")
    cb.add_argument("--compress", type=int, default=None, metavar="N", help="keep the N most informative codewords")
    cb.add_argument("--criterion", choices=_CRITERIA, default=None, help="compression criterion (default coherence; needs --compress)")
    cb.set_defaults(func=_cmd_codebook)

    from lwpd import _experiment

    run = sub.add_parser(
        "run",
        formatter_class=_HelpWithDefaults,
        help="compare LWPD with uncoded, gradient coding and the other schemes under stragglers",
        description="Train one model with every scheme on the same data, simulated cluster and seed; print a "
        "table and write results.json and loss_vs_time.png.",
    )
    run.add_argument("--dataset", choices=_experiment.DATASETS, default="digits", help="the training data (scikit-learn's)")
    run.add_argument("--model", choices=_experiment.MODELS, default="auto", help="default: the data set's natural model")
    run.add_argument("--schemes", default=",".join(registry.DEFAULT_NAMES),
                     help=f"comma-separated, from {', '.join(registry.NAMES)}")
    run.add_argument("--workers", type=int, default=_defaults.WORKERS, help="simulated workers, one shard of the rows each")
    run.add_argument("--stragglers", default="shifted-exp:shift=1,rate=0.5",
                     help="delay model name[:key=value,...], e.g. pareto:alpha=1.5 or slow:fraction=0.1,slowdown=10")
    run.add_argument("--placement", default="iid", metavar="SPEC",
                     help="which training rows each worker holds, the same for every scheme (lwpd.placement): iid "
                     "(a seeded shuffle, default), sorted (contiguous rows in order of label, or of target for "
                     "regression) or dirichlet:alpha=A (label skew: each worker's class proportions drawn from "
                     "Dirichlet(A), e.g. dirichlet:alpha=0.5; small A, few classes per worker)")
    run.add_argument("--policy", choices=("first_k", "deadline", "async"), default="first_k",
                     help="first_k: each scheme waits until it can decode (default); deadline: 3 time units per step; "
                     "async: workers never wait, the master steps every quarter of the workers' results")
    run.add_argument("--backend", choices=("simulated", "threads", "processes", "dask"), default="simulated",
                     help="simulated: virtual clock (default); threads, processes: a local pool; dask: a Dask "
                     "LocalCluster (one worker process per core) or the scheduler at --dask-address; the real "
                     "backends sleep 1 ms per modelled time unit")
    run.add_argument("--dask-address", default=None, metavar="ADDR",
                     help="with --backend dask: a running scheduler, e.g. tcp://host:8786 (default: start a LocalCluster)")
    run.add_argument("--tls-ca-file", default=None, metavar="PEM",
                     help="with --dask-address tls://...: the certificate authority that signed the scheduler's "
                     "certificate (with --tls-cert and --tls-key: this client's certificate and key)")
    run.add_argument("--tls-cert", default=None, metavar="PEM", help="this client's TLS certificate (see --tls-ca-file)")
    run.add_argument("--tls-key", default=None, metavar="PEM", help="this client's TLS private key (see --tls-ca-file)")
    run.add_argument("--seed", type=int, default=0, help="seed of the data split, the delays and every scheme")
    run.add_argument("--max-steps", type=int, default=300, help="gradient steps per scheme")
    run.add_argument("--latency", type=float, default=0.0, help="time per result message (lwpd.cost; default 0)")
    run.add_argument("--bandwidth", type=float, default=float("inf"),
                     help="floats per time unit, e.g. the number of parameters to make a gradient cost one unit "
                     "of compute (default inf: communication free)")
    run.add_argument("--out", default="lwpd-results", help="folder for results.json and loss_vs_time.png")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lwpd`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "codebook":
        if args.criterion is not None and args.compress is None:
            parser.error("--criterion needs --compress N (the number of codewords to keep)")
        args.criterion = args.criterion or "coherence"
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader went away (e.g. `lwpd codebook --dim 8 | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
