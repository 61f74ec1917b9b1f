"""What the three linear problems of :mod:`lwpd.problems` share (private): input checks,
parameter packing, the residual pass and the directional derivatives of coded tasks, the
Lipschitz bound. See :mod:`lwpd.problems` for the conventions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from lwpd import _config
from lwpd._validation import (
    as_index_array,
    as_real_array,
    check_bool,
    check_finite,
    check_real,
)
from lwpd.codebook import check_codebook


def as_design(X: Any) -> np.ndarray | sp.csr_array:
    """Validate ``X``: a real, finite 2-D dense array or SciPy sparse matrix (float64)."""
    if sp.issparse(X):
        mat = sp.csr_array(X)
        if mat.dtype.kind not in "biuf":
            raise TypeError(f"X must be real, got a sparse matrix of dtype {mat.dtype}")
        mat = mat.astype(np.float64)
        mat.sum_duplicates()
        check_finite("X", mat.data)
        arr: np.ndarray | sp.csr_array = mat
    else:
        arr = as_real_array("X", X, ndim=(2,), keep_float32=False)
        check_finite("X", arr)
        # Fortran order is kept: it makes the column reads of directional_derivatives
        # contiguous; anything else becomes C order (fast row subsets for shards)
        arr = arr if arr.flags.f_contiguous else np.ascontiguousarray(arr)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"X must have at least one row and one column, got shape {arr.shape}")
    return arr


def as_labels(y: Any, m: int) -> np.ndarray:
    """Validate the shape of ``y`` (1-D, length ``m``); return it as an array."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"y must be 1-D, got an array of shape {arr.shape}")
    if arr.shape[0] != m:
        raise ValueError(f"y must have one entry per row of X: X has {m} rows, y has length {arr.shape[0]}")
    return arr


def encode_classes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct labels and the index of each sample's label among them."""
    if y.dtype.kind == "f":
        check_finite("y", y)
    if y.dtype.kind == "c":
        raise TypeError(f"y must hold class labels (numbers or strings), got dtype {y.dtype}")
    try:
        classes, codes = np.unique(y, return_inverse=True)
    except TypeError as exc:
        raise TypeError(f"y must hold mutually comparable class labels: {exc}") from None
    return classes, codes.reshape(-1).astype(np.int64)


def as_unit_weights(sample_weight: Any, m: int) -> np.ndarray | None:
    """Validate ``sample_weight`` (``m`` finite weights >= 0, not all zero) and rescale it
    to average one; ``None`` stays ``None`` (all weights one)."""
    if sample_weight is None:
        return None
    s = as_real_array("sample_weight", sample_weight, ndim=(1,), keep_float32=False)
    if s.shape[0] != m:
        raise ValueError(f"sample_weight must have one entry per row of X: X has {m} rows, sample_weight has length {s.shape[0]}")
    check_finite("sample_weight", s)
    if (s < 0).any():
        raise ValueError("sample_weight must be >= 0")
    total = float(s.sum())
    if total <= 0:
        raise ValueError("sample_weight must have a positive sum")
    return s * (m / total)


class LinearProblem(ABC):
    """Shared machinery: a linear model with ``K`` outputs, intercepts, and an L2 penalty.

    Subclasses define ``_n_outputs`` (via ``self._k``), ``_losses(Z, rows)`` (the
    per-sample losses for scores ``Z`` of shape ``(len(rows), K)``) and
    ``_residuals(Z, rows)`` (``dl/dZ``, same shape).
    """

    def __init__(self, X: Any, alpha: float, sample_weight: Any = None, fit_intercept: bool = True) -> None:
        self._X = as_design(X)
        self._m, self._d = (int(s) for s in self._X.shape)
        self._alpha = check_real("alpha", alpha, nonnegative=True)
        self._fit_intercept = check_bool("fit_intercept", fit_intercept)
        # coordinates per output in theta: d weights, plus the intercept when it is fitted
        self._stride = self._d + int(self._fit_intercept)
        self._u = as_unit_weights(sample_weight, self._m)
        self._k = 1
        self._lipschitz: float | None = None
        self._row_lipschitz: dict[bytes, float] = {}
        # (rows, X rows, T, Z, R) per row set: all rows (key None) and read-only shards
        self._score_cache: dict[Any, tuple] = {}
        self._recent: list[tuple[np.ndarray, np.ndarray]] = []  # (parameters, scores over all rows)

    # ------------------------------------------------------------------ properties
    @property
    def X(self) -> np.ndarray | sp.csr_array:
        """The design matrix, shape ``(n_samples, n_features)`` (float64; sparse as CSR)."""
        return self._X

    @property
    def alpha(self) -> float:
        """L2 penalty strength on the weights (not the intercepts)."""
        return self._alpha

    @property
    def sample_weight(self) -> np.ndarray | None:
        """Per-sample weights rescaled to average one (``None``: unweighted)."""
        return self._u

    @property
    def fit_intercept(self) -> bool:
        """Whether ``theta`` holds intercepts (else they are fixed at zero)."""
        return self._fit_intercept

    @property
    def n_samples(self) -> int:
        """Number of samples ``m`` (rows of ``X``)."""
        return self._m

    @property
    def n_features(self) -> int:
        """Number of features ``d`` (columns of ``X``)."""
        return self._d

    @property
    def n_outputs(self) -> int:
        """Number of linear outputs ``K`` (1, or the number of classes for softmax)."""
        return self._k

    @property
    def n_params(self) -> int:
        """Length of the parameter vector, ``K * (d + 1)`` (weights and intercepts; ``K * d``
        without intercepts)."""
        return self._k * self._stride

    # ------------------------------------------------------------------ layout
    def unpack(self, theta: Any) -> tuple[np.ndarray, np.ndarray | float]:
        """Split a parameter vector into weights and intercept(s).

        Parameters
        ----------
        theta : array_like, shape (n_params,)

        Returns
        -------
        weights : numpy.ndarray
            Shape ``(d,)`` for one output, ``(K, d)`` for softmax.
        intercept : float or numpy.ndarray
            A float for one output, shape ``(K,)`` for softmax.
        """
        T = self._theta_matrix(theta)
        if self._k == 1:
            return T[0, :-1].copy(), float(T[0, -1])
        return T[:, :-1].copy(), T[:, -1].copy()

    def pack(self, weights: Any, intercept: Any = 0.0) -> np.ndarray:
        """Build a parameter vector from weights and intercept(s); inverse of :meth:`unpack`.

        Parameters
        ----------
        weights : array_like
            Shape ``(d,)`` for one output (``(1, d)`` is accepted too), ``(K, d)`` for softmax.
        intercept : float or array_like, default 0.0
            A scalar, or one value per output.

        Returns
        -------
        numpy.ndarray, shape (n_params,)
        """
        W = as_real_array("weights", weights, ndim=(1, 2), keep_float32=False)
        W = W.reshape(1, -1) if W.ndim == 1 else W
        if W.shape != (self._k, self._d):
            raise ValueError(f"weights must have shape {(self._k, self._d) if self._k > 1 else (self._d,)}, got {np.shape(weights)}")
        b = as_real_array("intercept", intercept, ndim=(0, 1), keep_float32=False).reshape(-1)
        if b.size not in (1, self._k):
            raise ValueError(f"intercept must be a scalar or have length {self._k}, got length {b.size}")
        if not self._fit_intercept and np.any(b != 0):
            raise ValueError("intercept must be 0 for a problem with fit_intercept=False")
        T = np.empty((self._k, self._d + 1))
        T[:, :-1] = W
        T[:, -1] = b
        return self._flatten(T)

    def _flatten(self, T: np.ndarray) -> np.ndarray:
        """The parameter vector (or gradient) of a ``(K, d + 1)`` matrix, intercepts dropped
        when they are not fitted."""
        return T.reshape(-1).copy() if self._fit_intercept else T[:, :-1].reshape(-1)

    # ------------------------------------------------------------------ checks
    def _theta_matrix(self, theta: Any) -> np.ndarray:
        arr = as_real_array("theta", theta, ndim=(1,), keep_float32=False)
        if arr.shape[0] != self.n_params:
            layout = f"{self._d} features + 1 intercept" if self._fit_intercept else f"{self._d} features, no intercept"
            raise ValueError(f"theta must have length n_params = {self.n_params} ({self._k} x ({layout})), got {arr.shape[0]}")
        check_finite("theta", arr)
        if self._fit_intercept:
            return arr.reshape(self._k, self._d + 1)
        T = np.zeros((self._k, self._d + 1))  # intercept column fixed at zero
        T[:, :-1] = arr.reshape(self._k, self._d)
        return T

    def _rows(self, rows: Any) -> np.ndarray | None:
        if rows is None:
            return None
        idx = as_index_array("rows", rows, self._m)
        if idx.size == 0:
            raise ValueError("rows must select at least one sample (the loss is a mean over rows)")
        return idx

    def _cache_key(self, rows: np.ndarray | None) -> Any:
        """Where the scores of ``rows`` are cached: ``None`` for all rows, the id of a
        read-only index array (a scheme's shard, reused every step), else no caching."""
        if rows is None:
            return None
        base = rows
        while base is not None:  # a read-only view of a writable array could still change
            if not isinstance(base, np.ndarray) or base.flags.writeable:
                return False
            base = base.base
        return id(rows)

    def _cached(self, rows: np.ndarray | None) -> tuple | None:
        key = self._cache_key(rows)
        entry = self._score_cache.get(key) if key is not False else None
        return entry if entry is not None and entry[0] is rows else None

    def _store(self, rows: np.ndarray | None, Xr: Any, T: Any = None, Z: Any = None, R: Any = None,
               G: Any = None) -> None:
        key = self._cache_key(rows)
        if key is False:
            return
        if key not in self._score_cache and len(self._score_cache) >= _config.SCORE_CACHE_ENTRIES:
            oldest = next(iter(self._score_cache), None)
            self._score_cache.pop(oldest, None)  # another thread may have evicted it already
        self._score_cache[key] = (rows, Xr, T, Z, R, G)  # one assignment: safe for threaded workers

    def _remember_scores(self, T: np.ndarray, Z: np.ndarray) -> None:
        """Keep the scores over all rows at the last ``_config.RECENT_SCORES`` parameters (none
        larger than ``_config.RECENT_SCORES_MAX_BYTES``: then every task reads its shard)."""
        if Z.nbytes > _config.RECENT_SCORES_MAX_BYTES:
            return
        others = [entry for entry in self._recent if not np.array_equal(entry[0], T)]
        self._recent = [(T, Z)] + others[: _config.RECENT_SCORES - 1]  # one assignment: thread-safe

    def _recent_scores(self, T: np.ndarray) -> np.ndarray | None:
        return next((Z for T0, Z in self._recent if np.array_equal(T0, T)), None)

    def extrapolated(self, point: np.ndarray, theta: np.ndarray, previous: np.ndarray, weight: float) -> None:
        """Note that ``point = theta + weight (theta - previous)`` (an accelerated method's next
        point), so that tasks at ``point`` need no pass over ``X``: the scores are affine in
        the parameters, so when those at ``theta`` and ``previous`` are known (their losses
        were taken) the scores at ``point`` are ``(1 + weight) Z(theta) - weight Z(previous)``.
        Called by :func:`lwpd.train`; a no-op when either is unknown.

        Parameters
        ----------
        point, theta, previous : ndarray, shape (n_params,)
        weight : float
        """
        at_theta, at_previous = self._recent_scores(self._theta_matrix(theta)), self._recent_scores(self._theta_matrix(previous))
        if at_theta is None or at_previous is None:
            return
        Z = (1.0 + weight) * at_theta - weight * at_previous
        Z.flags.writeable = False
        self._remember_scores(self._theta_matrix(point).copy(), Z)

    def _X_rows(self, rows: np.ndarray | None) -> np.ndarray | sp.csr_array:
        if rows is None:
            return self._X
        cached = self._cached(rows)
        if cached is not None:
            return cached[1]
        Xr = self._X[rows]
        self._store(rows, Xr)
        return Xr

    def _weigh(self, values: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """Per-sample ``values`` (first axis over the selected rows) times the unit weights."""
        if self._u is None:
            return values
        u = self._u if rows is None else self._u[rows]
        return values * (u if values.ndim == 1 else u[:, None])

    def _scores(self, T: np.ndarray, Xr: np.ndarray | sp.csr_array, rows: np.ndarray | None = None) -> np.ndarray:
        """``Z = X_rows W^T + b``, shape ``(len(rows), K)`` (read-only when ``rows`` is None).

        The scores over all rows, and over each read-only row set (a scheme's shards), are
        cached for the last parameters seen: in one process (a simulated cluster) every
        coded task of a step on those rows, the diagnostic gradient and the next step's
        tasks share them, so a step reads ``X`` once instead of once per task -- as a real
        worker computes its forward pass once and :mod:`lwpd.cost` charges it.
        """
        cached = self._cached(rows)
        if cached is not None and cached[2] is not None and np.array_equal(cached[2], T):
            return cached[3]
        known = self._recent_scores(T)  # over all rows (a loss taken there, or extrapolated())
        if known is not None:
            Z = known if rows is None else known[rows]
        else:
            # a contiguous copy of the small weight matrix: BLAS is ~10x slower on the strided view
            Z = np.asarray(Xr @ np.ascontiguousarray(T[:, :-1].T)) + T[:, -1]
        if rows is None or cached is not None:
            Z.flags.writeable = False  # shared by later callers
            T = T.copy()
            self._store(rows, Xr, T, Z)
            if rows is None and known is None:
                self._remember_scores(T, Z)
        return Z

    def _weighted_residuals(self, T: np.ndarray, Xr: np.ndarray | sp.csr_array, rows: np.ndarray | None) -> np.ndarray:
        """``u_i dl/dZ_i`` over the selected rows; over all rows cached with the scores."""
        Z = self._scores(T, Xr, rows)
        cached = self._cached(rows)
        if cached is not None and cached[3] is Z and cached[4] is not None:
            return cached[4]
        R = self._weigh(self._residuals(Z, rows), rows)
        if cached is not None and cached[3] is Z:
            R.flags.writeable = False
            self._store(rows, Xr, cached[2], Z, R)
        return R

    def _column_products(self, Xr: Any, R: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """``X_rows^T R`` over every feature, shape ``(d, K)``; cached with the residuals, so the
        chunks of one worker's step (same rows, same parameters) compute it once."""
        cached = self._cached(rows)
        if cached is not None and cached[4] is R and cached[5] is not None:
            return cached[5]
        G = np.asarray(Xr.T @ R)
        if cached is not None and cached[4] is R:
            G.flags.writeable = False
            self._store(rows, Xr, cached[2], cached[3], R, G)
        return G

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_score_cache"] = {}  # a cache, not state: do not ship it to process workers
        state["_recent"] = []
        return state

    # ------------------------------------------------------------------ model-specific
    @abstractmethod
    def _losses(self, Z: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """Per-sample losses for scores ``Z``, shape ``(len(rows),)``."""

    @abstractmethod
    def _residuals(self, Z: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """``dl/dZ`` per sample, shape ``(len(rows), K)`` (not divided by the row count)."""

    @abstractmethod
    def _curvature(self) -> float:
        """An upper bound on the per-sample loss's second derivative in the scores."""

    # ------------------------------------------------------------------ public maths
    def loss(self, theta: Any, rows: Any = None) -> float:
        """Mean loss over the selected rows plus ``alpha / 2 * ||W||^2``.

        Parameters
        ----------
        theta : array_like, shape (n_params,)
            Parameters, laid out as in the class docstring.
        rows : array_like of int, optional
            Samples to average over (repeats count repeatedly); ``None`` means all.

        Returns
        -------
        float
        """
        T = self._theta_matrix(theta)
        idx = self._rows(rows)
        Xr = self._X_rows(idx)
        Z = self._scores(T, Xr, idx)
        W = T[:, :-1]
        return float(self._weigh(self._losses(Z, idx), idx).sum() / Z.shape[0] + 0.5 * self._alpha * np.vdot(W, W))

    def gradient(self, theta: Any, rows: Any = None) -> np.ndarray:
        """Full gradient of :meth:`loss` with respect to ``theta``.

        Parameters
        ----------
        theta : array_like, shape (n_params,)
        rows : array_like of int, optional
            Samples to average over; ``None`` means all.

        Returns
        -------
        numpy.ndarray, shape (n_params,)
        """
        T = self._theta_matrix(theta)
        idx = self._rows(rows)
        Xr = self._X_rows(idx)
        R = self._weighted_residuals(T, Xr, idx)
        n = R.shape[0]
        G = np.empty_like(T)
        G[:, :-1] = np.asarray(Xr.T @ R).T / n + self._alpha * T[:, :-1]
        G[:, -1] = R.sum(axis=0) / n
        return self._flatten(G)

    def directional_derivatives(self, theta: Any, codebook: Any, indices: Any, rows: Any = None) -> np.ndarray:
        """Directional derivatives ``<grad f(theta), v_j>`` for the codewords ``v_j`` chosen.

        The residuals ``r_i = l'(x_i . theta, y_i)`` are computed once (one pass over the
        selected rows of ``X``); then only the columns of ``X`` touched by the chosen
        codewords are read (with more than ``lwpd._config.ALL_COLUMNS_FRACTION`` of the
        features touched, or as many codeword entries, one product over all columns is
        faster in this simulation and is used instead). The full
        gradient is never formed, so the work after the residual pass grows with the
        codewords' total weight, not with ``n_params``; :mod:`lwpd.cost` charges it so.

        Parameters
        ----------
        theta : array_like, shape (n_params,)
        codebook : lwpd.Codebook
            Codewords of dimension ``n_params`` (coordinates laid out as in the class docstring).
        indices : array_like of int
            Indices of the codewords to evaluate (repeats allowed).
        rows : array_like of int, optional
            Samples to average over (a worker's shard); ``None`` means all.

        Returns
        -------
        numpy.ndarray, shape (len(indices),)
            ``result[t] = <gradient(theta, rows), codebook[indices[t]]>``.
        """
        T = self._theta_matrix(theta)
        cb = check_codebook("codebook", codebook)
        if cb.dim != self.n_params:
            raise ValueError(f"codebook dim must equal n_params = {self.n_params}, got a codebook of dim {cb.dim}")
        sel = as_index_array("indices", indices, len(cb))
        idx = self._rows(rows)
        if sel.size == 0:
            return np.zeros(0)

        # Entries of the selected codewords: (codeword slot, coordinate, value).
        slot, coords, vals = cb.internals.csr().selected_entries(sel)
        vals = vals.astype(np.float64)

        # Residuals: one pass over the selected rows.
        Xr = self._X_rows(idx)
        R = self._weighted_residuals(T, Xr, idx)
        n = R.shape[0]

        cached = self._cached(idx)
        formed = cached is not None and cached[4] is R and cached[5] is not None
        if formed or coords.size > _config.ALL_COLUMNS_FRACTION * self._d:
            # An earlier chunk on these rows and parameters formed the product over all columns,
            # or these codewords have so many entries that forming it beats finding their distinct
            # coordinates: a gather from it -- far less Python per call at a thousand simulated
            # workers; the same numbers up to rounding, the same charged cost
            products = self._column_products(Xr, R, idx)
            G = np.empty_like(T)
            G[:, :-1] = products.T / n + self._alpha * T[:, :-1]
            G[:, -1] = R[:, np.arange(R.shape[1])].sum(axis=0) / n  # summed as the general path sums
            return np.bincount(slot, weights=vals * self._flatten(G)[coords], minlength=sel.size)

        # Gradient entries at the touched coordinates only.
        touched, inverse = np.unique(coords, return_inverse=True)
        out_k, feat = np.divmod(touched, self._stride)
        g = np.empty(touched.size)
        is_b = feat == self._d
        g[is_b] = R[:, out_k[is_b]].sum(axis=0) / n
        if (~is_b).any():
            feats, f_inv = np.unique(feat[~is_b], return_inverse=True)
            if feats.size > _config.ALL_COLUMNS_FRACTION * self._d:
                # many columns touched: one product over all of them (shared by the worker's
                # other chunks) is faster than gathering them; same result, same charged cost
                M = self._column_products(Xr, R, idx)[feats]
            else:
                M = np.asarray(Xr[:, feats].T @ R)  # only the touched columns, (len(feats), K)
            kw = out_k[~is_b]
            g[~is_b] = M[f_inv, kw] / n + self._alpha * T[kw, feat[~is_b]]
        return np.bincount(slot, weights=vals * g[inverse.reshape(-1)], minlength=sel.size)

    # ------------------------------------------------------------------ smoothness
    def _augmented_norm_sq(self, rows: np.ndarray | None = None) -> float:
        """``||D^(1/2) [X 1]||_2^2`` over ``rows`` (all by default; ``D`` the unit sample
        weights, the column of ones only with intercepts): exact from a small Gram matrix,
        else Lanczos with a margin."""
        d, c = self._d, int(self._fit_intercept)
        X = self._X if rows is None else self._X[rows]
        m = X.shape[0]
        if self._u is None:
            sq = np.ones(m)
        else:
            sq = np.sqrt(self._u if rows is None else self._u[rows])
            X = sp.csr_array(sp.diags_array(sq) @ X) if sp.issparse(X) else X * sq[:, None]
        if min(m, d + c) <= _config.EXACT_GRAM_LIMIT:
            if d + c <= m:
                XtX = X.T @ X
                XtX = XtX.toarray() if sp.issparse(XtX) else np.asarray(XtX)
                if not c:
                    A = XtX
                else:
                    s = np.asarray(X.T @ sq).reshape(-1)
                    A = np.empty((d + 1, d + 1))
                    A[:d, :d], A[:d, d], A[d, :d], A[d, d] = XtX, s, s, sq @ sq
            else:
                XXt = X @ X.T
                A = (XXt.toarray() if sp.issparse(XXt) else np.asarray(XXt)) + c * np.outer(sq, sq)
            return float(max(np.linalg.eigvalsh(A)[-1], 0.0))

        def matvec(v: np.ndarray) -> np.ndarray:
            v = np.asarray(v).reshape(-1)
            u = np.asarray(X @ v[:d]).reshape(-1) + (v[d] * sq if c else 0.0)
            out = np.empty(d + c)
            out[:d] = np.asarray(X.T @ u).reshape(-1)
            if c:
                out[d] = sq @ u
            return out

        op = spla.LinearOperator((d + c, d + c), matvec=matvec, dtype=np.float64)
        top = spla.eigsh(op, k=1, which="LA", tol=1e-10, return_eigenvectors=False)[0]
        return float(top) * (1.0 + _config.LANCZOS_MARGIN)

    def lipschitz(self, rows: Any = None) -> float:
        """An upper bound on the Lipschitz constant of :meth:`gradient` (over all rows, or
        of the gradient over ``rows``: the mean over those rows plus the penalty).

        Equal to ``c * ||[X 1]||_2^2 / m + alpha``, with ``c`` the bound on the second
        derivative of the per-sample loss (1 for least squares, 1/4 for logistic, 1/2 for
        softmax). ``||[X 1]||_2`` is the spectral norm of ``X`` with a column of ones
        appended (for the intercepts; none without them), its rows scaled by the square
        roots of the unit sample weights when there are any; it is computed exactly from the smaller Gram matrix
        when one side has at most 2048 entries, else by Lanczos iteration
        (``scipy.sparse.linalg.eigsh``) inflated by a relative margin of ``1e-6``. The
        value is cached. A step size of ``1 / lipschitz()`` is safe for gradient descent.

        Parameters
        ----------
        rows : array_like of int, optional
            Sample indices (e.g. a worker's shard): the bound for the gradient over them, with
            ``m`` their number (:meth:`gradient` with ``rows``); cached per row set.

        Returns
        -------
        float

        Examples
        --------
        >>> import numpy as np
        >>> from lwpd.problems import LeastSquares
        >>> prob = LeastSquares(np.eye(4), np.ones(4), fit_intercept=False)
        >>> prob.lipschitz(), prob.lipschitz(rows=[0])   # ||X||^2 / m: 1/4 over all rows, 1 over one
        (0.25, 1.0)
        """
        if rows is not None:
            idx = self._rows(rows)
            key = idx.tobytes()  # a scheme asks once per shard and run: kept per row set
            if key not in self._row_lipschitz:
                self._row_lipschitz[key] = self._curvature() * self._augmented_norm_sq(idx) / idx.size + self._alpha
            return self._row_lipschitz[key]
        if self._lipschitz is None:
            self._lipschitz = self._curvature() * self._augmented_norm_sq() / self._m + self._alpha
        return self._lipschitz

    def __repr__(self) -> str:
        kind = "sparse" if sp.issparse(self._X) else "dense"
        return (
            f"{type(self).__name__}(n_samples={self._m}, n_features={self._d}, "
            f"n_params={self.n_params}, alpha={self._alpha}, X={kind})"
        )
