"""The package's public names: one sorted ``__all__`` that covers every error a caller may catch."""

from __future__ import annotations

import re

import litellm_cloud
from litellm_cloud import _errors


def test_all_is_sorted_and_resolves() -> None:
    assert litellm_cloud.__all__ == sorted(litellm_cloud.__all__)
    assert all(hasattr(litellm_cloud, name) for name in litellm_cloud.__all__)


def test_every_leaf_error_is_exported() -> None:
    errors = [v for v in vars(_errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    leaves = {e.__name__ for e in errors if not e.__subclasses__()}
    assert leaves - set(litellm_cloud.__all__) == set()


def test_every_error_class_is_exported_bases_too() -> None:
    errors = {n for n, v in vars(_errors).items() if isinstance(v, type) and issubclass(v, Exception)}
    assert errors - set(litellm_cloud.__all__) == set()


def test_the_error_tree_drawing_names_every_class() -> None:
    drawing = (_errors.__doc__ or "").split("::", 1)[1].split("\n\n")[1]
    errors = [n for n, v in vars(_errors).items() if isinstance(v, type) and issubclass(v, Exception)]
    assert [n for n in errors if not re.search(rf"\b{n}\b", drawing)] == []
