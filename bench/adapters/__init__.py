"""Models from outside the package, behind the shared interface (models/base.py).

`register()` adds their spec namespaces to the model registry, so every command that takes a model
spec accepts them: `official/NAME` builds the official code of NAME from `../shared/peers`
(bench.adapters.official); `recbole/ClassName` builds any sequential model of the installed
RecBole package through the same adapter (bench.adapters.recbole_zoo). The official code and
RecBole are imported only when such a spec is first used.
"""
from __future__ import annotations

import models


def _official_class(name: str):
    from bench.adapters import official

    return official.twin_class(name)


def _official_names() -> list[str]:
    from bench.adapters import official

    return official.twin_names()


def _zoo_class(name: str):
    from bench.adapters import recbole_zoo

    return recbole_zoo.zoo_class(name)


def _zoo_names() -> list[str]:
    from bench.adapters import recbole_zoo

    return recbole_zoo.zoo_names()


def register() -> None:
    """Idempotent: make `official/NAME` and `recbole/ClassName` resolvable by models.model_class /
    build / make_config."""
    models.register_namespace("official", _official_class, _official_names)
    models.register_namespace("recbole", _zoo_class, _zoo_names)
