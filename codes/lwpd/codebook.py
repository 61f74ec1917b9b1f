"""Codebooks of derivative directions and partitions of a flat parameter vector."""

from __future__ import annotations

from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import scipy.sparse as sp

from lwpd import _config
from lwpd._validation import (
    as_index_array,
    as_real_array,
    check_finite,
    check_int,
)

__all__ = ["Codebook", "Partition"]


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    arr.flags.writeable = False
    return arr


class Partition:
    """Contiguous blocks of a flat parameter vector of length ``dim``.

    Block ``k`` holds coordinates ``offsets[k]:offsets[k + 1]``. Codebooks whose codewords
    each live inside one block can be encoded and decoded block by block, in parallel.

    Parameters
    ----------
    sizes : array_like of int
        Positive block sizes, in order. Prefer the constructors :meth:`uniform` and
        :meth:`from_sizes`.

    Examples
    --------
    >>> from lwpd import Partition
    >>> p = Partition.uniform(10, 4)
    >>> p.sizes.tolist(), p.offsets.tolist()
    ([4, 4, 2], [0, 4, 8, 10])
    """

    __slots__ = ("_sizes", "_offsets")

    def __init__(self, sizes: Any) -> None:
        arr = np.asarray(sizes)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"sizes must be a non-empty 1-D sequence of block sizes, got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
                if np.abs(arr).max() > _config.MAX_DIM:
                    raise ValueError(f"sizes must sum to at most {_config.MAX_DIM:,} coordinates "
                                     f"(lwpd._config.MAX_DIM), got a block of {np.abs(arr).max():.3g}")
                arr = arr.astype(np.int64)
            else:
                raise TypeError(f"sizes must hold integers, got dtype {arr.dtype}")
        if (arr < 1).any():
            raise ValueError(f"sizes must all be >= 1, got {int(arr.min())} at block {int(np.argmin(arr))}")
        total = sum(int(size) for size in arr)  # Python integers: no wrap-around
        if total > _config.MAX_DIM:
            raise ValueError(f"sizes must sum to at most {_config.MAX_DIM:,} coordinates (lwpd._config.MAX_DIM), "
                             f"got {total:,}")
        self._sizes = _readonly(arr.astype(np.int64))
        self._offsets = _readonly(np.concatenate([[0], np.cumsum(self._sizes)]).astype(np.int64))

    @classmethod
    def uniform(cls, n: int, block_size: int) -> "Partition":
        """Blocks of ``block_size`` coordinates; the last block holds the remainder.

        Parameters
        ----------
        n : int
            Length of the parameter vector (>= 1).
        block_size : int
            Coordinates per block (>= 1).

        Returns
        -------
        Partition
        """
        n = check_int("n", n, minimum=1)
        block_size = check_int("block_size", block_size, minimum=1)
        full, rest = divmod(n, block_size)
        sizes = [block_size] * full + ([rest] if rest else [])
        return cls(sizes)

    @classmethod
    def from_sizes(cls, sizes: Any) -> "Partition":
        """Blocks of the given sizes, in order.

        Parameters
        ----------
        sizes : array_like of int
            Positive block sizes.

        Returns
        -------
        Partition
        """
        return cls(sizes)

    @property
    def n_blocks(self) -> int:
        """Number of blocks."""
        return int(self._sizes.size)

    @property
    def sizes(self) -> np.ndarray:
        """Block sizes, shape ``(n_blocks,)`` (read-only)."""
        return self._sizes

    @property
    def offsets(self) -> np.ndarray:
        """Block boundaries, shape ``(n_blocks + 1,)``; block ``k`` is ``offsets[k]:offsets[k+1]``."""
        return self._offsets

    @property
    def dim(self) -> int:
        """Total number of coordinates."""
        return int(self._offsets[-1])

    def block_of_coordinate(self, coordinates: Any) -> np.ndarray:
        """Block index of each coordinate.

        Parameters
        ----------
        coordinates : array_like of int
            Coordinates in ``[0, dim)``.

        Returns
        -------
        numpy.ndarray of int64
            One block index per coordinate (1-D).

        Raises
        ------
        IndexError
            A coordinate lies outside ``[0, dim)``.
        """
        coords = as_index_array("coordinates", coordinates, self.dim)
        return np.searchsorted(self._offsets[1:], coords, side="right").astype(np.int64)

    def _leading_run(self) -> int:
        """Number of leading blocks that share the size of block 0."""
        unequal = np.flatnonzero(self._sizes != self._sizes[0])
        return int(unequal[0]) if unequal.size else self.n_blocks

    def __len__(self) -> int:
        return self.n_blocks

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Partition) and np.array_equal(self._sizes, other._sizes)

    def __hash__(self) -> int:
        return hash(self._sizes.tobytes())

    def __repr__(self) -> str:
        if self.n_blocks <= 6:
            return f"Partition(sizes={self._sizes.tolist()})"
        return f"Partition(n_blocks={self.n_blocks}, dim={self.dim})"

    def __reduce__(self):
        return (Partition, (np.array(self._sizes),))


def _check_partition(partition: Any, dim: int) -> Partition | None:
    if partition is None:
        return None
    if not isinstance(partition, Partition):
        raise TypeError(f"partition must be a lwpd.Partition or None, got {type(partition).__name__}")
    if partition.dim != dim:
        raise ValueError(
            f"partition must cover the dimension: its blocks cover {partition.dim} coordinates, "
            f"the codewords have {dim}"
        )
    return partition


class _CSR:
    """Plain CSR arrays (int64 indices), the form the kernels take."""

    __slots__ = ("indptr", "indices", "data", "shape")

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int]):
        self.indptr = _readonly(indptr.astype(np.int64, copy=False))
        self.indices = _readonly(indices.astype(np.int64, copy=False))
        self.data = _readonly(data)
        self.shape = (int(shape[0]), int(shape[1]))

    @classmethod
    def from_scipy(cls, mat: Any) -> "_CSR":
        mat = sp.csr_array(mat)
        mat.sum_duplicates()
        mat.eliminate_zeros()
        mat.sort_indices()
        return cls(mat.indptr, mat.indices, mat.data, mat.shape)

    def to_scipy(self) -> sp.csr_array:
        return sp.csr_array((np.array(self.data), np.array(self.indices), np.array(self.indptr)), shape=self.shape)

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    def row_weights(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row_norms(self) -> np.ndarray:
        sq = np.add.reduceat(self.data.astype(np.float64) ** 2, self.indptr[:-1]) if self.data.size else None
        norms = np.zeros(self.n_rows)
        nonempty = np.diff(self.indptr) > 0
        if sq is not None:
            norms[nonempty] = np.sqrt(sq[nonempty])
        return norms

    def scaled_rows(self, factors: np.ndarray) -> "_CSR":
        data = self.data * np.repeat(factors, np.diff(self.indptr)).astype(self.data.dtype)
        return _CSR(np.array(self.indptr), np.array(self.indices), data, self.shape)

    def take_rows(self, rows: np.ndarray) -> "_CSR":
        return _CSR.from_scipy(self.to_scipy()[rows])

    def selected_entries(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The nonzeros of the rows ``rows`` (repeats allowed), vectorised:
        ``(position in rows, coordinate, value)`` per nonzero."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        counts = ends - starts
        slot = np.repeat(np.arange(rows.size), counts)
        pos = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        return slot, self.indices[pos], self.data[pos]


class Codebook:
    """An immutable set of ``N`` codewords (derivative directions) in ``R^n``.

    Row ``j`` is codeword ``v_j``; a worker given ``v_j`` returns ``<grad f, v_j>``. The rows
    are stored in compressed sparse row form. With a :class:`Partition`, every codeword lives
    inside one block of coordinates, which lets encoding and decoding run block by block.
    A codebook that tiles one base pattern over equal blocks (see
    :func:`lwpd.block_codebook`) is kept as that pattern and encoded by a fast path that
    never reads per-nonzero indices.

    Build one with :meth:`from_dense`, :meth:`from_scipy` or a constructor such as
    :func:`lwpd.projective_codebook`; the class is not constructed directly (its
    ``__init__`` arguments are the private storage layout).

    Examples
    --------
    >>> import numpy as np
    >>> from lwpd import Codebook
    >>> cb = Codebook.from_dense([[1, 0], [0, 1], [1, 1], [1, -1]])
    >>> len(cb), cb.dim, cb.weights.tolist()
    (4, 2, [1, 1, 2, 2])
    >>> cb.encode(np.array([3.0, 2.0])).tolist()
    [3.0, 2.0, 5.0, 1.0]
    """

    __slots__ = (
        "_dim",
        "_partition",
        "_blocks",
        "_tile",
        "_tile_blocks",
        "_rest",
        "_rest_block",
        "_cache",
    )

    def __init__(
        self,
        dim: int,
        partition: Partition | None,
        tile: _CSR | None,
        tile_blocks: int,
        rest: _CSR,
        rest_block: np.ndarray,
    ) -> None:
        # Private: use the classmethods. ``tile`` is a base pattern (local coordinates)
        # repeated over blocks 0..tile_blocks-1; ``rest`` holds the remaining codewords with
        # global coordinates, and ``rest_block`` their block indices.
        self._dim = int(dim)
        self._partition = partition
        self._blocks = partition if partition is not None else Partition([dim])
        self._tile = tile
        self._tile_blocks = int(tile_blocks) if tile is not None else 0
        self._rest = rest
        self._rest_block = _readonly(rest_block.astype(np.int64, copy=False))
        self._cache: dict[str, Any] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dense(cls, array: Any, partition: Partition | None = None) -> "Codebook":
        """Build a codebook from a dense ``(N, n)`` array whose rows are the codewords.

        Parameters
        ----------
        array : array_like, shape (N, n)
            Real codewords, one per row. float32 and float64 are kept; integers become
            float64. No row may be zero and no entry NaN or inf.
        partition : Partition, optional
            Blocks of the ``n`` coordinates; each codeword must lie inside one block.

        Returns
        -------
        Codebook

        Examples
        --------
        >>> from lwpd import Codebook, Partition
        >>> cb = Codebook.from_dense([[1, 1, 0, 0], [0, 0, 1, -1]], Partition.uniform(4, 2))
        >>> cb.block_of.tolist()
        [0, 1]
        """
        arr = as_real_array("array", array, ndim=(2,))
        if arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"array must have at least one row and one column, got shape {arr.shape}")
        check_finite("array", arr)
        return cls._from_csr(_CSR.from_scipy(sp.csr_array(arr)), partition, "array")

    @classmethod
    def from_scipy(cls, sparse: Any, partition: Partition | None = None) -> "Codebook":
        """Build a codebook from a SciPy sparse matrix or array whose rows are the codewords.

        Parameters
        ----------
        sparse : scipy.sparse matrix or array, shape (N, n)
            Real codewords; explicit zeros are dropped, duplicate entries summed.
        partition : Partition, optional
            Blocks of the ``n`` coordinates; each codeword must lie inside one block.

        Returns
        -------
        Codebook
        """
        if not sp.issparse(sparse):
            raise TypeError(f"sparse must be a scipy.sparse matrix or array, got {type(sparse).__name__}")
        mat = sp.csr_array(sparse)
        if mat.dtype.kind not in "biuf":
            raise TypeError(f"sparse must be real, got dtype {mat.dtype}")
        if mat.dtype not in _config.FLOAT_DTYPES:
            mat = mat.astype(_config.DEFAULT_DTYPE)
        if mat.shape[0] < 1 or mat.shape[1] < 1:
            raise ValueError(f"sparse must have at least one row and one column, got shape {mat.shape}")
        check_finite("sparse", mat.data)
        return cls._from_csr(_CSR.from_scipy(mat), partition, "sparse")

    @classmethod
    def _from_csr(cls, csr: _CSR, partition: Partition | None, name: str) -> "Codebook":
        dim = csr.shape[1]
        partition = _check_partition(partition, dim)
        weights = csr.row_weights()
        if (weights == 0).any():
            row = int(np.flatnonzero(weights == 0)[0])
            raise ValueError(f"{name} has a zero row (row {row}); every codeword must be nonzero")
        low, high = _config.CODEBOOK_ENTRY_RANGE
        magnitude = np.abs(csr.data[csr.data != 0])
        smallest, largest = (float(magnitude.min()), float(magnitude.max())) if magnitude.size else (low, high)
        if smallest < low or largest > high:
            bad = smallest if smallest < low else largest
            raise ValueError(f"{name} has an entry of magnitude {bad:.3g}; nonzero entries must lie in [{low:g}, {high:g}] "
                             "(lwpd._config.CODEBOOK_ENTRY_RANGE) so that decoding, which multiplies entries, neither "
                             "overflows nor underflows: scale the codewords (a codeword's scale does not change what "
                             "it spans)")
        blocks = partition if partition is not None else Partition([dim])
        first = blocks.block_of_coordinate(csr.indices[csr.indptr[:-1]])
        last = blocks.block_of_coordinate(csr.indices[csr.indptr[1:] - 1])
        if (first != last).any():
            row = int(np.flatnonzero(first != last)[0])
            raise ValueError(
                f"{name} row {row} spans blocks {int(first[row])} to {int(last[row])} of the partition; "
                "every codeword must lie inside one block"
            )
        return cls(dim, partition, None, 0, csr, first)

    @classmethod
    def _tiled(cls, base: "Codebook", partition: Partition, tile_blocks: int, rest: _CSR, rest_block: np.ndarray) -> "Codebook":
        return cls(partition.dim, partition, base._csr(), tile_blocks, rest, rest_block)

    # ------------------------------------------------------------------ properties
    @property
    def n_codewords(self) -> int:
        """Number of codewords ``N``."""
        return self._tile_rows * self._tile_blocks + self._rest.n_rows

    @property
    def dim(self) -> int:
        """Dimension ``n`` of the space the codewords live in."""
        return self._dim

    @property
    def partition(self) -> Partition | None:
        """The coordinate blocks, or ``None`` for an unpartitioned codebook."""
        return self._partition

    @property
    def blocks(self) -> Partition:
        """The coordinate blocks used for block-wise work (the partition, or one block)."""
        return self._blocks

    @property
    def dtype(self) -> np.dtype:
        """Floating dtype of the stored codeword entries."""
        return self._rest.data.dtype if self._tile is None else self._tile.data.dtype

    @property
    def nnz(self) -> int:
        """Total number of nonzero entries over all codewords."""
        tile = self._tile.data.size * self._tile_blocks if self._tile is not None else 0
        return int(tile + self._rest.data.size)

    @property
    def weights(self) -> np.ndarray:
        """Hamming weight (number of nonzero entries) of each codeword, shape ``(N,)``."""
        if "weights" not in self._cache:
            parts = [np.tile(self._tile.row_weights(), self._tile_blocks)] if self._tile is not None else []
            parts.append(self._rest.row_weights())
            self._cache["weights"] = _readonly(np.concatenate(parts).astype(np.int64))
        return self._cache["weights"]

    @property
    def block_of(self) -> np.ndarray:
        """Block index of each codeword, shape ``(N,)`` (all zero without a partition)."""
        if "block_of" not in self._cache:
            parts = [np.repeat(np.arange(self._tile_blocks, dtype=np.int64), self._tile_rows)]
            parts.append(self._rest_block)
            self._cache["block_of"] = _readonly(np.concatenate(parts))
        return self._cache["block_of"]

    @property
    def _tile_rows(self) -> int:
        return self._tile.n_rows if self._tile is not None else 0

    @property
    def internals(self) -> "CodebookInternals":
        """How the codebook is stored, for lwpd's own kernels and dispatch (not a stable API)."""
        return CodebookInternals(self)

    def __len__(self) -> int:
        return self.n_codewords

    def __eq__(self, other: object) -> bool:
        """Same dimension, partition and codewords (entries compared exactly, in order)."""
        if not isinstance(other, Codebook):
            return NotImplemented
        if self is other:
            return True
        if (self.dim, self.n_codewords, self.nnz) != (other.dim, other.n_codewords, other.nnz):
            return False
        if self._partition != other._partition:
            return False
        a, b = self._csr(), other._csr()
        return (
            np.array_equal(a.indptr, b.indptr)
            and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.data, b.data)
        )

    __hash__ = None  # equality compares contents; codebooks are not dict keys

    def __repr__(self) -> str:
        w = self.weights
        blocks = f", n_blocks={self._blocks.n_blocks}" if self._partition is not None else ""
        return (
            f"Codebook(n_codewords={self.n_codewords}, dim={self.dim}{blocks}, "
            f"max_weight={int(w.max()) if w.size else 0}, dtype={self.dtype})"
        )

    # ------------------------------------------------------------------ conversion
    def _csr(self) -> _CSR:
        """All codewords as CSR with global coordinates (materialises a tiled codebook)."""
        if self._tile is None:
            return self._rest
        if "csr" not in self._cache:
            t, k = self._tile, self._tile_blocks
            size = self._blocks.sizes[0]
            nnz_t = t.data.size
            indices = (t.indices[None, :] + size * np.arange(k, dtype=np.int64)[:, None]).reshape(-1)
            indptr = (t.indptr[None, :-1] + nnz_t * np.arange(k, dtype=np.int64)[:, None]).reshape(-1)
            indptr = np.concatenate([indptr, self._rest.indptr + nnz_t * k])
            data = np.concatenate([np.tile(t.data, k), self._rest.data.astype(t.data.dtype)])
            indices = np.concatenate([indices, self._rest.indices])
            self._cache["csr"] = _CSR(indptr, indices, data, (self.n_codewords, self.dim))
        return self._cache["csr"]

    def to_scipy(self) -> sp.csr_array:
        """The codewords as a ``scipy.sparse.csr_array`` of shape ``(N, n)`` (a copy)."""
        return self._csr().to_scipy()

    def to_dense(self) -> np.ndarray:
        """The codewords as a dense ``(N, n)`` array (a copy)."""
        return self.to_scipy().toarray()

    def _iter_blocks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, int]]:
        """Yield ``(block, codeword_indices, dense_rows, multiplicity)`` per distinct block.

        For a tiled codebook the base pattern is yielded once with multiplicity equal to the
        number of blocks it covers (``codeword_indices`` are those of the first such block);
        every other non-empty block is yielded with multiplicity 1. ``dense_rows`` has the
        block's local coordinates as columns.
        """
        offsets = self._blocks.offsets
        if self._tile is not None and self._tile_blocks:
            yield 0, np.arange(self._tile_rows), self._tile.to_scipy().toarray(), self._tile_blocks
        if self._rest.n_rows == 0:
            return
        order, ptr = self._rest_groups()
        base = self._tile_rows * self._tile_blocks
        rest = self._rest.to_scipy()
        for blk in np.flatnonzero(np.diff(ptr)):
            rows = order[ptr[blk] : ptr[blk + 1]]
            beta = blk + self._tile_blocks
            dense = rest[rows][:, offsets[beta] : offsets[beta + 1]].toarray()
            yield int(beta), rows + base, dense, 1

    def _tile_ell(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """The tile's base pattern, transposed and padded to its maximum weight (ELL form):
        ``W x m`` local indices and values (in ``dtype``), zero-padded, as the fast encode
        path reads them."""
        key = ("ell", np.dtype(dtype).str)
        if key not in self._cache:
            t = self._tile
            weights = t.row_weights()
            width = int(weights.max())
            slot = np.arange(t.data.size) - np.repeat(t.indptr[:-1], weights)
            rows = np.repeat(np.arange(t.n_rows), weights)
            ell_idx = np.zeros((width, t.n_rows), dtype=np.intp)
            ell_val = np.zeros((width, t.n_rows), dtype=dtype)
            ell_idx[slot, rows] = t.indices
            ell_val[slot, rows] = t.data
            self._cache[key] = (_readonly(ell_idx), _readonly(ell_val))
        return self._cache[key]

    def _tile_dense(self, dtype: np.dtype) -> np.ndarray:
        """The tile's base pattern as a dense ``b x m`` matrix (transposed) in ``dtype``."""
        key = ("dense", np.dtype(dtype).str)
        if key not in self._cache:
            self._cache[key] = _readonly(self._tile.to_scipy().toarray().T.astype(dtype))
        return self._cache[key]

    def _rest_groups(self) -> tuple[np.ndarray, np.ndarray]:
        """Rest codewords sorted by block: ``(order, ptr)`` with ``ptr`` over blocks
        ``tile_blocks .. n_blocks - 1``."""
        if "groups" not in self._cache:
            local = self._rest_block - self._tile_blocks
            order = np.argsort(local, kind="stable").astype(np.int64)
            counts = np.bincount(local, minlength=self._blocks.n_blocks - self._tile_blocks)
            ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            self._cache["groups"] = (_readonly(order), _readonly(ptr))
        return self._cache["groups"]

    # ------------------------------------------------------------------ derived codebooks
    def normalized(self) -> "Codebook":
        """The same lines with every codeword scaled to unit Euclidean norm.

        Returns
        -------
        Codebook
        """
        def unit(csr: _CSR) -> _CSR:
            norms = csr.row_norms()
            return csr.scaled_rows(1.0 / np.where(norms > 0, norms, 1.0))

        tile = unit(self._tile) if self._tile is not None else None
        return Codebook(self._dim, self._partition, tile, self._tile_blocks, unit(self._rest), self._rest_block)

    def subset(self, indices: Any) -> "Codebook":
        """The codewords at ``indices``, in that order, with the same partition.

        Parameters
        ----------
        indices : array_like of int
            Codeword indices in ``[0, N)``.

        Returns
        -------
        Codebook
        """
        idx = as_index_array("indices", indices, self.n_codewords)
        if idx.size == 0:
            raise ValueError("indices must select at least one codeword")
        return Codebook(self._dim, self._partition, None, 0, self._csr().take_rows(idx), self.block_of[idx])

    def gram(self, dense: bool = True) -> np.ndarray | sp.csr_array:
        """Gram matrix ``V V^T`` of the codewords, shape ``(N, N)``.

        Parameters
        ----------
        dense : bool, default True
            Return a dense array; ``False`` returns a ``scipy.sparse.csr_array`` (codewords in
            different blocks are orthogonal, so the Gram of a block codebook is sparse).

        Returns
        -------
        numpy.ndarray or scipy.sparse.csr_array
            float64 Gram matrix ``G[i, j] = <v_i, v_j>``.
        """
        csr = self.to_scipy().astype(np.float64)
        gram = sp.csr_array(csr @ csr.T)
        return gram.toarray() if dense else gram

    # ------------------------------------------------------------------ encoding
    def encode(self, g: Any, out: np.ndarray | None = None, backend: str = "cpu") -> np.ndarray:
        """Directional derivatives ``<g, v_j>`` of every codeword.

        Parameters
        ----------
        g : array_like, shape (n,) or (m, n)
            A gradient, or ``m`` gradients as rows. float32 and float64 are kept as given;
            other real dtypes become float64. NaN or inf is rejected.
        out : numpy.ndarray, optional
            C-contiguous array of the result's shape and dtype to write into (saves
            allocating, and first-touching, a large result on every call). With a device
            ``g`` on the CUDA backend, a device array.
        backend : {"cpu", "cuda", "auto"}, default "cpu"
            ``"cuda"`` runs the numba.cuda kernels on an NVIDIA GPU (``RuntimeError`` if none
            is found); ``"auto"`` uses the GPU when one is usable. On the GPU, a NumPy ``g``
            is copied to the device and the result back; a device ``g`` (a numba device
            array, or any object with ``__cuda_array_interface__`` such as a CuPy array or a
            torch CUDA tensor) is read in place and the result stays on the device.

        Returns
        -------
        numpy.ndarray, shape (N,) or (m, N)
            ``V @ g`` (or ``g @ V.T`` for a batch), in the dtype of ``g``.

        Examples
        --------
        >>> import numpy as np
        >>> from lwpd import projective_codebook
        >>> cb = projective_codebook(2, normalize=False)
        >>> cb.encode(np.array([1.0, 2.0])).tolist()
        [1.0, 2.0, 3.0, -1.0]
        """
        from lwpd import _backend
        from lwpd._kernels import cpu

        if _backend.resolve(backend) == "cuda":
            from lwpd import _gpu

            return _gpu.encode(self, g, out)
        arr = as_real_array("g", g, ndim=(1, 2))
        if arr.shape[-1] != self._dim:
            raise ValueError(
                f"g must have length {self._dim} (the codebook dimension) along its last axis, "
                f"got shape {arr.shape}"
            )
        check_finite("g", arr)
        batch = np.ascontiguousarray(arr.reshape(-1, self._dim))
        shape = (self.n_codewords,) if arr.ndim == 1 else (batch.shape[0], self.n_codewords)
        if out is None:
            out = np.empty(shape, dtype=batch.dtype)
        elif (not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != batch.dtype
              or not out.flags.c_contiguous or not out.flags.writeable):
            raise ValueError(f"out must be a writeable C-contiguous numpy array of shape {shape} and dtype {batch.dtype}")
        result = out
        out = out.reshape(batch.shape[0], self.n_codewords)
        if self._tile is not None and self._tile_blocks:
            size, rows, k = int(self._blocks.sizes[0]), batch.shape[0], self._tile_blocks
            g3 = batch[:, : size * k].reshape(rows, k, size)
            out3 = out[:, : self._tile_rows * k].reshape(rows, k, self._tile_rows)
            ell = self._tile_ell(batch.dtype)
            width = ell[0].shape[0]
            if size * batch.dtype.itemsize <= _config.DENSE_TILE_BYTES_PER_WEIGHT * width:
                cpu.encode_tiled("dense", size, g3, (self._tile_dense(batch.dtype),), out3, work=out.size)
            else:
                cpu.encode_tiled("ell", width, g3, ell, out3, work=out.size)
        if self._rest.n_rows:
            r = self._rest
            cpu.encode_csr(batch, r.indptr, r.indices, r.data, self._tile_rows * self._tile_blocks, out, work=out.size)
        return result

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        return {s: getattr(self, s) for s in self.__slots__ if s != "_cache"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        self._cache = {}


# ---------------------------------------------------------------------------- internal interface
class Storage(NamedTuple):
    """A codebook as kept: a base pattern tiled over equal blocks, then the other codewords."""

    base: _CSR | None  #: the tile's base pattern, local block coordinates (None: no tile)
    tiled_blocks: int  #: blocks ``0 .. tiled_blocks - 1`` repeat the base
    rows: int  #: codewords per tiled block (the base's rows; 0 without a tile)
    rest: _CSR  #: the other codewords, global coordinates, indices from ``rows * tiled_blocks``
    rest_block: np.ndarray  #: the block of each of those


class CodebookInternals:
    """How a codebook is stored, for lwpd's kernels, decoders and GPU dispatch (reached as
    :attr:`Codebook.internals`). Not a stable API: it changes with the storage.

    What is derived from a codebook (packed layouts, device copies, one-shot decoding
    scratch) is kept with it by :meth:`memo`, since a codebook is immutable.
    """

    __slots__ = ("_cb",)

    def __init__(self, cb: Codebook) -> None:
        self._cb = cb

    @property
    def storage(self) -> Storage:
        """The tile and the rest (views, no copies)."""
        cb = self._cb
        return Storage(cb._tile, cb._tile_blocks, cb._tile_rows, cb._rest, cb._rest_block)

    def rest_groups(self) -> tuple[np.ndarray, np.ndarray]:
        """The untiled codewords grouped by block: ``(order, ptr)``, ``ptr`` running over
        blocks ``tiled_blocks .. n_blocks - 1`` (cached)."""
        return self._cb._rest_groups()

    def csr(self) -> _CSR:
        """Every codeword in CSR form with global coordinates (cached; materialises a tile)."""
        return self._cb._csr()

    def tile_ell(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """The tile's base transposed and padded to its largest weight (cached)."""
        return self._cb._tile_ell(dtype)

    def distinct_blocks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, int]]:
        """``(block, codeword_indices, dense_rows, multiplicity)`` per distinct block (the
        tile's base once, with the number of blocks it covers)."""
        return self._cb._iter_blocks()

    def replace(self, key: Any, value: Any) -> Any:
        """Keep ``value`` under ``key`` instead of what was kept there; return it."""
        self._cb._cache[key] = value
        return value

    def memo(self, key: Any, build: Callable[[], Any]) -> Any:
        """The value kept under ``key``, built by ``build()`` on first use."""
        cache = self._cb._cache
        value = cache.get(key)
        if value is None:
            value = cache[key] = build()
        return value


def codebook_from_csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int],
                      name: str = "array") -> Codebook:
    """A codebook from CSR arrays (for constructions that build them directly), validated as
    :meth:`Codebook.from_scipy` validates; ``name`` is the argument named in its errors."""
    return Codebook._from_csr(_CSR(indptr, indices, data, shape), None, name)


def tiled_codebook(base: Codebook, partition: Partition, tiled_blocks: int, rest: Any = None,
                   rest_block: np.ndarray | None = None) -> Codebook:
    """``base`` repeated over blocks ``0 .. tiled_blocks - 1`` of ``partition`` (kept as the
    pattern), then the codewords of ``rest`` (a SciPy sparse matrix in global coordinates,
    block by block) in blocks ``rest_block``; ``rest=None``: no others."""
    if rest is None:
        empty = _CSR(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, base.dtype), (0, partition.dim))
        return Codebook._tiled(base, partition, tiled_blocks, empty, np.zeros(0, np.int64))
    return Codebook._tiled(base, partition, tiled_blocks, _CSR.from_scipy(rest), rest_block)


def leading_run(partition: Partition) -> int:
    """Number of leading blocks of ``partition`` that share the size of block 0."""
    return partition._leading_run()


def check_codebook(name: str, value: Any) -> Codebook:
    """Return ``value`` if it is a :class:`Codebook`, else raise ``TypeError`` naming ``name``."""
    if not isinstance(value, Codebook):
        raise TypeError(f"{name} must be a lwpd.Codebook, got {type(value).__name__}")
    return value
