"""A function as the source text a node receives, and the same job run here on mock data.

:func:`function_source` turns a ``def`` into the text that travels (decorators dropped) and
refuses functions that would not run on the node because they use names from outside them.
:func:`run_on_mock` runs a job in this process on the dataset's mock data the way the node
runs it on the private rows: the same partitions, defaults, clamping and OpenDP noise.
"""

from __future__ import annotations

import ast
import builtins
import dis
import inspect
import textwrap
import types
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rds_kernel.errors import BadRequest

if TYPE_CHECKING:  # pragma: no cover
    from rds_kernel.client._dataset import RemoteDataset

__all__ = ["decode_output", "function_source", "run_on_mock"]

PROVIDED = {"pd", "pandas", "np", "numpy"}


def function_source(
    function: Callable[..., Any] | str, entry: str | None = None
) -> tuple[str, str]:
    """The source text to send and the name of the function to call in it.

    A function's own source is used (decorators removed); a string is sent as it is, and
    ``entry`` (or its only top-level function) names the function.
    """
    if isinstance(function, str):
        tree = ast.parse(function)
        names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        if entry is None:
            if len(names) != 1:
                raise BadRequest("the source defines several functions; say which with entry=")
            entry = names[0]
        if entry not in names:
            raise BadRequest(f"the source defines no function named {entry!r}")
        return function, entry
    if not isinstance(function, types.FunctionType) or function.__name__ == "<lambda>":
        raise BadRequest("send a function defined with `def` (not a lambda, class or method)")
    _check_self_contained(function)
    try:
        text = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        raise BadRequest(
            f"cannot find the source of {function.__name__}; define it in a file or a notebook "
            "cell, or send the source text itself"
        ) from None
    tree = ast.parse(text)
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if not defs:
        raise BadRequest(f"cannot find the definition of {function.__name__} in its source")
    lines = text.splitlines()
    body = "\n".join(lines[defs[0].lineno - 1 :]) + "\n"  # from `def`: decorators dropped
    return body, function.__name__


def _check_self_contained(function: types.FunctionType) -> None:
    outside = set(function.__code__.co_freevars) | {
        name
        for name in _globals_used(function.__code__)
        if name not in PROVIDED and name != function.__name__ and not hasattr(builtins, name)
    }
    if outside:
        listed = ", ".join(sorted(outside))
        raise BadRequest(
            f"{function.__name__} uses names defined outside it ({listed}); only its source "
            "is sent, so define or import them inside the function"
        )


def _globals_used(code: types.CodeType) -> set[str]:
    """Names the code (and the functions and comprehensions inside it) looks up globally."""
    names = {
        str(i.argval)
        for i in dis.get_instructions(code)
        if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")
    }
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _globals_used(const)
    return names


def decode_output(output: Any) -> Any:
    """A reviewed job's output as the function returned it: a DataFrame, bytes or JSON."""
    if not isinstance(output, dict):
        return output
    if output.get("type") == "table":
        import pandas as pd

        return pd.DataFrame(output["rows"], columns=output["columns"])
    if output.get("type") == "bytes":
        import base64

        return base64.b64decode(output["base64"])
    return output.get("value")


def run_on_mock(
    function: Callable[..., Any], dataset: RemoteDataset, kind: str, params: dict[str, Any]
) -> Any:
    """The job, run in this process on the mock data. Nothing is sent; nothing is charged."""
    frame = dataset.mock_frame()
    if kind != "dp":
        return function(frame.to_pandas())
    from rds_kernel.dp.aggregate import (
        SampleAggregate,
        clamp_outputs,
        prepare_aggregate,
        release_aggregate,
    )

    spec = SampleAggregate.from_dict(params)
    outputs: list[list[float] | None] = []
    failures: list[str] = []
    for part in _partitions(frame, spec.partitions, dataset.schema.identifier):
        try:
            outputs.append(_numbers(function(part.to_pandas()), spec.outputs))
        except Exception as exc:  # as on the node: a failed partition counts as the default
            outputs.append(None)
            failures.append(f"{type(exc).__name__}: {exc}")
    if failures:
        warnings.warn(
            f"{len(failures)} of {spec.partitions} partitions of the mock data failed and count "
            f"as the default; the first: {failures[0]}",
            stacklevel=2,
        )
    values = release_aggregate(prepare_aggregate(spec), clamp_outputs(spec, outputs))
    return values[0] if spec.scalar else values


def _partitions(frame: Any, k: int, identifier: str | None) -> list[Any]:
    """As the node does: each row (or each person, with an identifier) to a random part."""
    import secrets

    import numpy as np
    import polars as pl

    if identifier is not None:
        labels = frame.get_column(identifier).hash(seed=secrets.randbits(64)) % k
    else:
        labels = pl.Series(np.random.default_rng().integers(0, k, frame.height))
    tagged = frame.with_columns(labels.cast(pl.Int64).alias("__part"))
    return [tagged.filter(pl.col("__part") == i).drop("__part") for i in range(k)]


def _numbers(value: Any, n: int) -> list[float]:
    import math

    if hasattr(value, "tolist"):
        value = value.tolist()
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise TypeError(f"the function must return finite numbers, got {v!r:.40}")
        out.append(float(v))
    if len(out) != n:
        raise TypeError(f"the function returned {len(out)} numbers, the bounds declare {n}")
    return out
