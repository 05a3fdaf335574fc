"""Naive Bayes. C = classes; a log-probability table lookup-and-add per value is 1."""

from __future__ import annotations

from typing import Any

from .registry import PREDICT, Data, formula


def _c(est: Any) -> int:
    return len(est.classes_)


@formula("GaussianNB", "fit", "partial_fit")
def gaussian_nb_fit(est: Any, x: Data) -> float:
    return 3 * x.nnz  # per-class mean and variance: add; subtract, square, add


@formula("GaussianNB", *PREDICT)
def gaussian_nb_predict(est: Any, x: Data) -> float:
    return 4 * x.n * x.f * _c(est)  # subtract, square, divide, add per class


@formula(("MultinomialNB", "ComplementNB"), "fit", "partial_fit", *PREDICT)
def multinomial_nb(est: Any, x: Data) -> float:
    """fit: Yᵀ·X class counts; predict: X·log θᵀ (2·nnz·C each); ComplementNB's complement
    counts and normalisation are per feature and class (small)."""
    return 2 * x.nnz * _c(est)


@formula("BernoulliNB", "fit", "partial_fit")
def bernoulli_nb_fit(est: Any, x: Data) -> float:
    return x.nnz + 2 * x.nnz * _c(est)  # binarise, then the class counts


@formula("BernoulliNB", *PREDICT)
def bernoulli_nb_predict(est: Any, x: Data) -> float:
    """Binarise, X·(log p - log(1 - p))ᵀ plus the sum of log(1 - p): 2·nnz·C + N·C."""
    return x.nnz + 2 * x.nnz * _c(est) + x.n * _c(est)


@formula("CategoricalNB", "fit", "partial_fit")
def categorical_nb_fit(est: Any, x: Data) -> float:
    return x.n * x.f * _c(est) + x.n * x.f  # the category counts per class, then the log-probabilities


@formula("CategoricalNB", *PREDICT)
def categorical_nb_predict(est: Any, x: Data) -> float:
    return x.n * x.f * _c(est)  # a lookup-and-add per value and class
