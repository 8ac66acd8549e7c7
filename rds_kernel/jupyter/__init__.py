"""rds_kernel in Jupyter: the ``%rds`` magics, the budget meter, and result displays.

``%load_ext rds_kernel`` (or ``%load_ext rds_kernel.jupyter``) registers the ``%rds`` line
magic and the ``%%rds`` cell magic (help: ``%rds?``) and HTML displays for released answers
and previews. It imports nothing slow: ipywidgets is imported when a meter is first shown,
pandas when a dataset or an answer is.

Modules: :mod:`~rds_kernel.jupyter.magics` (parse and dispatch),
:mod:`~rds_kernel.jupyter.session` (connections, datasets, budgets),
:mod:`~rds_kernel.jupyter.cell` (running a cell on mock data or on a node),
:mod:`~rds_kernel.jupyter.meter` (the budget meter), :mod:`~rds_kernel.jupyter.display`
(HTML for answers, previews, datasets and history) and :mod:`~rds_kernel.jupyter.failures`
(rds errors as one line).
"""

from __future__ import annotations

from typing import Any

_MAGICS_ATTR = "_rds_magics"


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``%rds`` magics and the displays in ``ipython``."""
    from rds_kernel.jupyter.display import register_formatters
    from rds_kernel.jupyter.magics import RdsMagics

    magics = RdsMagics(shell=ipython, parent=ipython)
    ipython.register_magics(magics)
    ipython.configurables.append(magics)
    register_formatters(ipython)
    setattr(ipython, _MAGICS_ATTR, magics)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove what :func:`load_ipython_extension` added and close the session's nodes."""
    from rds_kernel.jupyter.display import unregister_formatters

    magics = getattr(ipython, _MAGICS_ATTR, None)
    if magics is None:
        return
    magics.session.close()
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("rds", None)
    ipython.magics_manager.registry.pop(type(magics).__name__, None)
    if magics in ipython.configurables:
        ipython.configurables.remove(magics)
    unregister_formatters(ipython)
    delattr(ipython, _MAGICS_ATTR)
