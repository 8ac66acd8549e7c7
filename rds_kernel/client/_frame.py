"""A released answer as a pandas DataFrame that shows its ± in a notebook.

Imported when the first answer is built (it imports pandas), never by ``import rds_kernel``.
"""

from __future__ import annotations

import pandas as pd

from rds_kernel.client._html import is_result, result_html


class ResultFrame(pd.DataFrame):
    """An answer of the client (a release, a mock run, a local release): a pandas DataFrame.

    Code uses it as any DataFrame (``isinstance(df, pd.DataFrame)``; ``df.attrs`` has
    ``epsilon_spent``, ``node``, ``accuracy``, ...). A notebook shows it as ``%%rds`` cells do:
    each value with its ± (95 %), the ε spent and the node — with or without
    ``%load_ext rds_kernel``. Frames derived from it (a column, a filter, a copy) are plain
    DataFrames: the ± of the answer says nothing about values computed from it.
    """

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame

    def _repr_html_(self) -> str | None:
        if is_result(self):
            return result_html(self)
        return super()._repr_html_()  # type: ignore[misc,no-any-return]
