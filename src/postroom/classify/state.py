"""Classifier state as bytes: numpy arrays in an ``.npz`` archive, never pickle.

:meth:`postroom.classify.model.Classifier.to_state` returns a mapping of names to arrays,
numbers, strings (category names, config) and one nested mapping (``config``).
:func:`dump_state` flattens it (``config.seed``) and writes it with ``allow_pickle`` off, so
loading a state can never execute code; :func:`load_state` gives the same mapping back.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

_NONE_KEYS = "__none__"


def dump_state(state: Mapping[str, Any]) -> bytes:
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    none_keys: list[str] = []

    def put(key: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for inner, item in value.items():
                put(f"{key}.{inner}", item)
        elif value is None:
            none_keys.append(key)
        elif isinstance(value, list | tuple) and not value:
            arrays[key] = np.zeros(0, dtype="<U1")
        else:
            array = np.asarray(value)
            if array.dtype == object:
                raise TypeError(f"state entry {key!r} is not numeric or text")
            arrays[key] = array

    for key, value in state.items():
        if "." in key:
            raise ValueError(f"state key {key!r} must not contain '.'")
        put(key, value)
    arrays[_NONE_KEYS] = np.array(none_keys, dtype=str) if none_keys else np.zeros(0, "<U1")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def load_state(data: bytes) -> dict[str, Any]:
    state: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        target = state
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value

    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        for key in archive.files:
            if key == _NONE_KEYS:
                continue
            array = archive[key]
            put(key, array.item() if array.ndim == 0 else array)
        for key in archive[_NONE_KEYS]:
            put(str(key), None)
    return state
