"""Dense linear algebra by textbook operation counts, leading terms, per matrix of a batch.

Source: Golub & Van Loan, Matrix Computations (the flop counts stated with each algorithm); an
n x n matrix A, a right-hand side with k columns, m >= n for rectangular ones (else the roles swap).

- LU with partial pivoting ``2/3 n^3`` (m x n: ``m n^2 - n^3/3``); triangular solve ``n^2 k``;
  solve via LU ``2/3 n^3 + 2 n^2 k``; inverse ``2 n^3``; determinant ``2/3 n^3``.
- Cholesky ``1/3 n^3``; its solve ``2 n^2 k``; inverse from the factor ``2/3 n^3``; LDL^T
  (Bunch-Kaufman) ``1/3 n^3``, its solve ``2 n^2 k``.
- Householder QR ``2 m n^2 - 2/3 n^3`` (``4/3 n^3`` square); applying or forming Q from k
  reflectors on an m x p block ``4 p (m k - k (k - 1) / 2)``; least squares by QR: the
  factorisation, Q^T applied to B, the triangular solve.
- SVD (Golub-Reinsch): values only ``4 m n^2 - 4/3 n^3``; thin U and V ``14 m n^2 + 8 n^3``;
  full U and V ``4 m^2 n + 8 m n^2 + 9 n^3``; pseudo-inverse: thin SVD plus ``2 m n^2``.
- Symmetric eigendecomposition (tridiagonal QR): values ``4/3 n^3``, with vectors ``9 n^3``;
  general (Hessenberg QR to the Schur form): ``10 n^3`` values, ``25 n^3`` with vectors.
- Matrix exponential: counted as 6 matrix products (``12 n^3``), the degree-13 Pade
  evaluation of Higham (2005); the data-dependent squarings are not seen.
"""

from __future__ import annotations

from math import prod
from typing import Any

import torch

from .registry import aten, flop_rule, packets


def _batch(t: torch.Tensor) -> int:
    return prod(t.shape[:-2])


def _mn(t: torch.Tensor) -> tuple[int, int]:
    """(rows, columns) with rows >= columns: rectangular counts are symmetric in the roles."""
    m, n = t.shape[-2], t.shape[-1]
    return (m, n) if m >= n else (n, m)


def _columns(b: torch.Tensor) -> int:
    return b.shape[-1] if b.dim() > 1 else 1


def _per_matrix(formula):
    """A rule applying ``formula(m, n)`` (m >= n) to every matrix of the first argument's batch."""

    def count(args: tuple, kwargs: dict, out: Any) -> int:
        a = args[0]
        return _batch(a) * formula(*_mn(a))

    count.__doc__ = formula.__doc__
    return count


def lu(m: int, n: int) -> int:
    """LU with partial pivoting: m n^2 - n^3 / 3 (2/3 n^3 square)."""
    return m * n * n - n**3 // 3


def cholesky(m: int, n: int) -> int:
    """Cholesky: n^3 / 3."""
    return n**3 // 3


def householder_qr(m: int, n: int) -> int:
    """Householder QR: 2 m n^2 - 2/3 n^3."""
    return 2 * m * n * n - 2 * n**3 // 3


def reflectors(m: int, k: int, p: int) -> int:
    """k Householder reflectors applied to an m x p block: reflector i costs 4 (m - i) p."""
    return 4 * p * (m * k - k * (k - 1) // 2)


flop_rule("linalg", aten.linalg_lu_factor_ex, aten.linalg_lu, aten._linalg_det, aten._linalg_slogdet,
          *packets("lu_factor_ex"))(_per_matrix(lu))
flop_rule("linalg", aten.linalg_cholesky_ex, aten.cholesky, aten.linalg_ldl_factor_ex)(_per_matrix(cholesky))
flop_rule("linalg", aten.linalg_qr, aten.geqrf)(_per_matrix(householder_qr))


@flop_rule("linalg", aten.cholesky_inverse)
def cholesky_inverse_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Inverse from a Cholesky factor (LAPACK potri): 2/3 n^3."""
    n = args[0].shape[-1]
    return _batch(args[0]) * 2 * n**3 // 3


@flop_rule("linalg", aten.linalg_inv_ex)
def inverse_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Inverse by LU and inversion of the factors (getrf + getri): 2 n^3."""
    n = args[0].shape[-1]
    return _batch(args[0]) * 2 * n**3


def _solve_columns(a: torch.Tensor, b: torch.Tensor, left: bool) -> int:
    """Right-hand sides of a solve: B's columns (left) or rows (right), over the broadcast batch."""
    batch = prod(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])) if b.dim() > 1 else _batch(a)
    return batch * (_columns(b) if left else b.shape[-2])


@flop_rule("linalg", aten.linalg_solve_triangular)
def solve_triangular_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Triangular solve: n^2 per right-hand side."""
    a, b = args[0], args[1]
    left = kwargs.get("left", True)
    return a.shape[-1] ** 2 * _solve_columns(a, b, left)


@flop_rule("linalg", aten.triangular_solve)
def triangular_solve_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Triangular solve (legacy argument order: B first): n^2 per right-hand side."""
    b, a = args[0], args[1]
    return a.shape[-1] ** 2 * _solve_columns(a, b, True)


def _factored_solve(factor_arg: int, b_arg: int):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        factor, b = args[factor_arg], args[b_arg]
        return 2 * factor.shape[-1] ** 2 * _solve_columns(factor, b, kwargs.get("left", True))

    count.__doc__ = "Two triangular solves with an existing factorisation: 2 n^2 per right-hand side."
    return count


flop_rule("linalg", aten.linalg_lu_solve, aten.linalg_ldl_solve)(_factored_solve(0, 2))
flop_rule("linalg", aten.cholesky_solve)(_factored_solve(1, 0))


@flop_rule("linalg", aten._linalg_solve_ex)
def solve_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """General solve: LU (2/3 n^3) and two triangular solves (2 n^2 per right-hand side)."""
    a, b = args[0], args[1]
    n = a.shape[-1]
    left = kwargs.get("left", True)
    if b.dim() == a.dim() - 1:  # a batch of vectors
        return _batch(a) * (lu(n, n) + 2 * n * n)
    return _batch(a) * lu(n, n) + 2 * n * n * _solve_columns(a, b, left)


@flop_rule("linalg", aten.ormqr, aten.linalg_householder_product)
def reflectors_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Applying (ormqr) or forming (householder_product) Q from k reflectors of length m."""
    a, tau = args[0], args[1]
    m, k = a.shape[-2], tau.shape[-1]
    target = args[2] if len(args) > 2 else a
    return _batch(a) * reflectors(m, k, target.shape[-1])


@flop_rule("linalg", aten.linalg_lstsq)
def lstsq_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Least squares by QR: factorise A, apply Q^T to B, solve the triangular system."""
    a, b = args[0], args[1]
    m, n = _mn(a)
    k = _columns(b) if b.dim() == a.dim() else 1
    return _batch(a) * (householder_qr(m, n) + reflectors(m, n, k) + n * n * k)


def svd(m: int, n: int, vectors: bool, full: bool) -> int:
    """Golub-Reinsch SVD (Golub & Van Loan table 8.6.1)."""
    if not vectors:
        return 4 * m * n * n - 4 * n**3 // 3
    if full:
        return 4 * m * m * n + 8 * m * n * n + 9 * n**3
    return 14 * m * n * n + 8 * n**3


@flop_rule("linalg", aten._linalg_svd)
def svd_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """SVD: values only, thin or full singular vectors."""
    a = args[0]
    full = args[1] if len(args) > 1 else kwargs.get("full_matrices", False)
    vectors = args[2] if len(args) > 2 else kwargs.get("compute_uv", True)
    return _batch(a) * svd(*_mn(a), vectors, full)


@flop_rule("linalg", aten.linalg_pinv)
def pinv_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Pseudo-inverse: thin SVD, then V diag(1/s) U^T (2 m n^2)."""
    m, n = _mn(args[0])
    return _batch(args[0]) * (svd(m, n, True, False) + 2 * m * n * n)


@flop_rule("linalg", aten._linalg_eigh)
def eigh_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Symmetric eigendecomposition: 4/3 n^3 for values, 9 n^3 with vectors."""
    n = args[0].shape[-1]
    vectors = args[2] if len(args) > 2 else kwargs.get("compute_v", True)
    return _batch(args[0]) * (9 * n**3 if vectors else 4 * n**3 // 3)


@flop_rule("linalg", aten.linalg_eig)
def eig_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """General eigendecomposition with vectors (the Schur form and its Q): 25 n^3."""
    n = args[0].shape[-1]
    return _batch(args[0]) * 25 * n**3


@flop_rule("linalg", *packets("_linalg_eigvals", "linalg_eigvals"))
def eigvals_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """General eigenvalues only (the Schur form without Q): 10 n^3."""
    n = args[0].shape[-1]
    return _batch(args[0]) * 10 * n**3


@flop_rule("linalg", aten.linalg_matrix_exp)
def matrix_exp_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Matrix exponential: six n x n products (12 n^3), without the data-dependent squarings."""
    n = args[0].shape[-1]
    return _batch(args[0]) * 12 * n**3
