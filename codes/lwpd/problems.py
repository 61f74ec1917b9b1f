"""Smooth learning problems whose workers return directional derivatives.

Three L2-regularised linear models: :class:`LeastSquares`, binary :class:`Logistic` and
multinomial :class:`Softmax` regression. Each exposes its loss, its full gradient and --
what a coded worker computes -- the directional derivatives ``<grad f(theta), v_j>`` for a
set of codewords, computed **without forming the full gradient**: the per-sample residuals
``r_i = l'(x_i . theta, y_i)`` are computed once (one pass over the selected rows of ``X``),
and then only the columns of ``X`` touched by the selected codewords are read, so that part
of the work grows with the codewords' weight, not with the number of parameters.

Conventions shared by all three problems
----------------------------------------
* ``X`` has shape ``(m, d)`` (dense NumPy or any SciPy sparse format; stored as float64,
  sparse as CSR, dense in Fortran order if given so -- the layout that suits the column
  reads of the coded tasks -- else in C order); ``y`` has length ``m``.
* The parameter vector holds the weights *and* the intercepts. With ``K`` outputs
  (``K = 1`` for least squares and logistic regression, ``K`` classes for softmax) it is
  the row-major flattening of a ``(K, d + 1)`` matrix whose row ``k`` is
  ``[w_k (d entries), b_k]``: coordinate ``p`` is feature ``p % (d + 1)`` of output
  ``p // (d + 1)``, the feature index ``d`` standing for the intercept. For ``K = 1`` this
  is simply ``theta = [w, b]``. :meth:`~LeastSquares.pack` and
  :meth:`~LeastSquares.unpack` convert.
* The objective is the mean of the per-sample losses over the selected rows plus
  ``alpha / 2 * ||W||_F^2`` -- the penalty is on the weights only, never the intercepts.
* ``rows`` (an integer array, repeats allowed) restricts the mean to a subset of samples,
  e.g. one worker's shard; ``None`` means all rows.
* ``sample_weight`` (optional, one nonnegative weight per sample) makes the loss a
  weighted mean. The weights are rescaled to average one over all samples, ``u_i = m s_i /
  sum(s)``, and the loss over ``rows`` is ``(1/|rows|) sum_{i in rows} u_i l_i``: over all
  rows that is the weighted mean ``sum_i s_i l_i / sum_i s_i`` (integer weights act as
  repeated rows), and shard means still combine into the full mean by shard size, as the
  data-parallel schemes assume.
* ``fit_intercept=False`` drops the intercepts from the parameter vector: it is then the
  row-major flattening of the ``(K, d)`` weight matrix (``n_params = K * d``) and the
  intercepts are fixed at zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, log_expit, logsumexp, softmax

from lwpd._linear_problem import LinearProblem, as_labels, encode_classes
from lwpd._validation import as_real_array, check_finite

__all__ = ["LeastSquares", "Logistic", "Softmax"]

class LeastSquares(LinearProblem):
    """L2-regularised linear least squares with an intercept.

    ``f(theta) = 1/(2m) * sum_i (x_i . w + b - y_i)^2 + alpha/2 * ||w||^2``, with
    ``theta = [w (d entries), b]`` (``n_params = d + 1``).

    Parameters
    ----------
    X : array_like or scipy.sparse matrix, shape (m, d)
        Real, finite features.
    y : array_like, shape (m,)
        Real, finite targets.
    alpha : float, default 0.0
        L2 penalty on ``w`` (>= 0); the intercept is not penalised.
    sample_weight : array_like, shape (m,), optional
        Nonnegative per-sample weights (not all zero): the loss becomes the weighted mean
        (see the module docstring). ``None``: every sample weighs one.
    fit_intercept : bool, default True
        ``False`` fixes the intercept at zero and leaves it out of ``theta``.

    Notes
    -----
    The residual of sample ``i`` is ``r_i = x_i . w + b - y_i``; the gradient is
    ``(1/m) [X 1]^T r + alpha [w, 0]`` and :meth:`lipschitz` is
    ``||[X 1]||_2^2 / m + alpha`` (the largest eigenvalue of the Hessian, up to the
    penalty's zero on the intercept). The minimiser equals scikit-learn's
    ``Ridge(alpha=m * alpha)``.

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd.problems import LeastSquares
    >>> from lwpd import identity_codebook
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> prob = LeastSquares(X, [1.0, 2.0, 3.0])
    >>> theta = prob.pack([1.0, 2.0], 0.0)       # the exact fit
    >>> prob.n_params, prob.loss(theta)
    (3, 0.0)
    >>> theta = np.zeros(3)
    >>> prob.gradient(theta).round(4).tolist()
    [-1.3333, -1.6667, -2.0]
    >>> prob.directional_derivatives(theta, identity_codebook(3), [2, 0]).round(4).tolist()
    [-2.0, -1.3333]
    """

    def __init__(self, X: Any, y: Any, alpha: float = 0.0, *, sample_weight: Any = None, fit_intercept: bool = True) -> None:
        super().__init__(X, alpha, sample_weight, fit_intercept)
        y_arr = as_real_array("y", as_labels(y, self._m), ndim=(1,), keep_float32=False)
        check_finite("y", y_arr)
        self._y = y_arr

    @property
    def y(self) -> np.ndarray:
        """Targets, shape ``(n_samples,)``."""
        return self._y

    def _target(self, rows: np.ndarray | None) -> np.ndarray:
        return self._y if rows is None else self._y[rows]

    def moments(self, rows: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The sums ``M = X~^T U X~`` and ``c = X~^T U y`` over the selected rows.

        ``X~`` is ``X`` with a column of ones appended for the intercept (when it is
        fitted) and ``U`` the unit sample weights. Over all rows the gradient is
        ``(M theta - c) / m + alpha [w, 0]``, so with the moments formed once a directional
        derivative costs one row of ``M`` per touched coordinate and never reads ``X``
        again (moment encoding; see ``LWPD(layout="moments")``). Shard moments add up.

        Parameters
        ----------
        rows : array_like of int, optional
            Samples to sum over; ``None`` means all.

        Returns
        -------
        M : numpy.ndarray, shape (n_params, n_params)
        c : numpy.ndarray, shape (n_params,)

        Examples
        --------
        >>> import numpy as np
        >>> from lwpd.problems import LeastSquares
        >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> prob = LeastSquares(X, [1.0, 2.0, 3.0])
        >>> M, c = prob.moments()
        >>> theta = np.array([0.5, -1.0, 2.0])
        >>> bool(np.allclose((M @ theta - c) / 3, prob.gradient(theta)))
        True
        """
        idx = self._rows(rows)
        Xr = self._X_rows(idx)
        u = np.ones(Xr.shape[0]) if self._u is None else (self._u if idx is None else self._u[idx])
        y = self._target(idx)
        n = self.n_params
        M = np.empty((n, n))
        c = np.empty(n)
        XtUX = Xr.T @ (sp.diags_array(u) @ Xr) if sp.issparse(Xr) else Xr.T @ (Xr * u[:, None])
        d = self._d
        M[:d, :d] = XtUX.toarray() if sp.issparse(XtUX) else XtUX
        c[:d] = np.asarray(Xr.T @ (u * y)).reshape(-1)
        if self._fit_intercept:
            s = np.asarray(Xr.T @ u).reshape(-1)
            M[:d, d], M[d, :d], M[d, d] = s, s, u.sum()
            c[d] = u @ y
        return M, c

    def _losses(self, Z: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        r = Z[:, 0] - self._target(rows)
        return 0.5 * r * r

    def _residuals(self, Z: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        return (Z[:, 0] - self._target(rows))[:, None]

    def _curvature(self) -> float:
        return 1.0


class Logistic(LinearProblem):
    """L2-regularised binary logistic regression with an intercept.

    Labels may be any two distinct values; they are sorted (:attr:`classes_`) and the
    second is the positive class, as in scikit-learn. With ``t_i`` in ``{0, 1}``,
    ``f(theta) = (1/m) sum_i [log(1 + exp(z_i)) - t_i z_i] + alpha/2 ||w||^2`` where
    ``z_i = x_i . w + b`` and ``theta = [w (d entries), b]`` (``n_params = d + 1``).

    Parameters
    ----------
    X : array_like or scipy.sparse matrix, shape (m, d)
        Real, finite features.
    y : array_like, shape (m,)
        Labels with exactly two distinct values.
    alpha : float, default 0.0
        L2 penalty on ``w`` (>= 0); the intercept is not penalised.
    sample_weight : array_like, shape (m,), optional
        Nonnegative per-sample weights (not all zero): the loss becomes the weighted mean
        (see the module docstring). ``None``: every sample weighs one.
    fit_intercept : bool, default True
        ``False`` fixes the intercept at zero and leaves it out of ``theta``.

    Notes
    -----
    The residual is ``r_i = sigmoid(z_i) - t_i``. The loss's second derivative is at most
    1/4, so :meth:`lipschitz` is ``||[X 1]||_2^2 / (4m) + alpha``. The minimiser equals
    scikit-learn's ``LogisticRegression(C=1 / (m * alpha))``; with ``alpha = 0`` the loss
    is ``sklearn.metrics.log_loss``.

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd.problems import Logistic
    >>> prob = Logistic(np.array([[0.0], [1.0], [2.0], [3.0]]), ["no", "no", "yes", "yes"])
    >>> prob.classes_.tolist(), prob.n_params
    (['no', 'yes'], 2)
    >>> bool(np.isclose(prob.loss(np.zeros(2)), np.log(2)))
    True
    >>> prob.gradient(np.zeros(2)).tolist()
    [-0.5, 0.0]
    """

    def __init__(self, X: Any, y: Any, alpha: float = 0.0, *, sample_weight: Any = None, fit_intercept: bool = True) -> None:
        super().__init__(X, alpha, sample_weight, fit_intercept)
        classes, codes = encode_classes(as_labels(y, self._m))
        if classes.size != 2:
            raise ValueError(
                f"y must hold exactly 2 distinct labels for Logistic, got {classes.size} "
                f"({classes[:5].tolist()}{' ...' if classes.size > 5 else ''}); use Softmax for more"
            )
        self.classes_ = classes
        self._t = codes.astype(np.float64)

    @property
    def y(self) -> np.ndarray:
        """Labels coded as 0.0 / 1.0 (index into :attr:`classes_`), shape ``(n_samples,)``."""
        return self._t

    def _target(self, rows: np.ndarray | None) -> np.ndarray:
        return self._t if rows is None else self._t[rows]

    def _losses(self, Z: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        z, t = Z[:, 0], self._target(rows)
        return -(t * log_expit(z)) - (1.0 - t) * log_expit(-z)

    def _residuals(self, Z: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        return (expit(Z[:, 0]) - self._target(rows))[:, None]

    def _curvature(self) -> float:
        return 0.25


class Softmax(LinearProblem):
    """L2-regularised multinomial logistic (softmax) regression with intercepts.

    With ``K`` classes (the sorted distinct labels, :attr:`classes_`), scores
    ``z_ik = x_i . w_k + b_k`` and ``c_i`` the class of sample ``i``,
    ``f(theta) = (1/m) sum_i [logsumexp_k z_ik - z_{i c_i}] + alpha/2 sum_k ||w_k||^2``.

    Parameter layout: ``theta`` is the row-major flattening of the ``(K, d + 1)`` matrix
    whose row ``k`` is ``[w_k (d entries), b_k]``; coordinate ``p`` is feature
    ``p % (d + 1)`` of class ``p // (d + 1)`` (feature index ``d`` is that class's
    intercept). ``n_params = K * (d + 1)``.

    Parameters
    ----------
    X : array_like or scipy.sparse matrix, shape (m, d)
        Real, finite features.
    y : array_like, shape (m,)
        Labels with at least two distinct values.
    alpha : float, default 0.0
        L2 penalty on the weights (>= 0); intercepts are not penalised.
    sample_weight : array_like, shape (m,), optional
        Nonnegative per-sample weights (not all zero): the loss becomes the weighted mean
        (see the module docstring). ``None``: every sample weighs one.
    fit_intercept : bool, default True
        ``False`` fixes the intercepts at zero and leaves them out of ``theta``.

    Notes
    -----
    The residuals are ``R = softmax(Z) - onehot(y)``. The Hessian of ``logsumexp`` has
    largest eigenvalue at most 1/2, so :meth:`lipschitz` is
    ``||[X 1]||_2^2 / (2m) + alpha``. The parametrisation is over-complete (adding a vector
    to every class changes nothing), so without a penalty the minimiser is not unique.

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd.problems import Softmax
    >>> prob = Softmax(np.array([[0.0], [1.0], [2.0]]), [0, 1, 2])
    >>> prob.classes_.tolist(), prob.n_params
    ([0, 1, 2], 6)
    >>> bool(np.isclose(prob.loss(np.zeros(6)), np.log(3)))
    True
    >>> W, b = prob.unpack(np.arange(6.0))
    >>> W.tolist(), b.tolist()
    ([[0.0], [2.0], [4.0]], [1.0, 3.0, 5.0])
    """

    def __init__(self, X: Any, y: Any, alpha: float = 0.0, *, sample_weight: Any = None, fit_intercept: bool = True) -> None:
        super().__init__(X, alpha, sample_weight, fit_intercept)
        classes, codes = encode_classes(as_labels(y, self._m))
        if classes.size < 2:
            raise ValueError(f"y must hold at least 2 distinct labels for Softmax, got {classes.size}")
        self.classes_ = classes
        self._codes = codes
        self._k = int(classes.size)

    @property
    def n_classes(self) -> int:
        """Number of classes ``K``."""
        return self._k

    @property
    def y(self) -> np.ndarray:
        """Class index of each sample (into :attr:`classes_`), shape ``(n_samples,)``."""
        return self._codes

    def _target(self, rows: np.ndarray | None) -> np.ndarray:
        return self._codes if rows is None else self._codes[rows]

    def _losses(self, Z: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        c = self._target(rows)
        return logsumexp(Z, axis=1) - Z[np.arange(Z.shape[0]), c]

    def _residuals(self, Z: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        P = softmax(Z, axis=1)
        P[np.arange(Z.shape[0]), self._target(rows)] -= 1.0
        return P

    def _curvature(self) -> float:
        return 0.5
