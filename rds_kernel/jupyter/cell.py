"""Running a ``%%rds`` cell: the same cell text on mock data, as a preview, or on a node.

Every dataset of the chosen nodes is bound in the notebook's namespace under its own name for
the duration of the cell, as a :class:`CellDataset`. It builds queries like a
:class:`rds_kernel.RemoteDataset`, but what ``.release()`` does depends on the cell:

* ``mock``: runs the query locally on the mock data through the same DP layer and charges a
  *simulated* budget, which starts at your real remaining budget on the node and is never sent
  to it. A release that would not fit is refused as the node would refuse it.
* ``preview``: asks the node for the cost and accuracy (free), shows them, and returns the mock
  run's answer so the rest of the cell still runs; nothing is spent.
* ``remote``: releases on the node, which charges your budget.

Queries built in the cell take the cell's ``--epsilon`` when ``.release()`` (or ``.preview()``)
is called without one.
"""

from __future__ import annotations

import ast
import keyword
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from rds_kernel import Query, QuerySpec
from rds_kernel.client import Node, Preview, RemoteDataset
from rds_kernel.errors import BudgetExceeded, RdsError, SpecError
from rds_kernel.jupyter.display import cost

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import polars as pl
    from IPython.core.interactiveshell import InteractiveShell

    from rds_kernel.client import Budget
    from rds_kernel.wire import BudgetLine

Mode = Literal["mock", "preview", "remote"]
_MISSING = object()


@dataclass
class Spent:
    """What the releases of a cell cost (or would cost) on one node."""

    releases: int = 0
    epsilon: float = 0.0
    delta: float = 0.0


class CellRun:
    """One run of a ``%%rds`` cell: its mode, its default epsilon and what it spent."""

    def __init__(
        self, mode: Mode, epsilon: float | None = None, show: Callable[[Any], object] = print
    ) -> None:
        self.mode: Mode = mode
        self.epsilon = epsilon
        self.show = show
        self.spent: dict[str, Spent] = {}
        self.simulated: dict[str, Budget] = {}
        """Mock mode: the simulated budget left on each node."""

    def epsilon_for(self, epsilon: float | None, what: str) -> float:
        """``epsilon``, or the cell's ``--epsilon``; SpecError saying how when neither is set."""
        if epsilon is not None:
            return epsilon
        if self.epsilon is None:
            raise SpecError(
                f"{what}() needs an epsilon: write .{what}(epsilon=0.5), or give the cell a "
                "default with %%rds ... --epsilon 0.5"
            )
        return self.epsilon

    def record(self, node: str, epsilon: float, delta: float) -> None:
        """Count one release of the cell on ``node`` and its cost."""
        spent = self.spent.setdefault(node, Spent())
        spent.releases += 1
        spent.epsilon += epsilon
        spent.delta += delta

    def simulated_budget(self, node: Node) -> Budget:
        """The simulated budget on ``node``: at first your real budget left there."""
        if node.name not in self.simulated:
            self.simulated[node.name] = node.budget.get()
        return self.simulated[node.name]

    def charge_simulated(self, node: Node, dataset: str, epsilon: float, delta: float) -> None:
        """Charge the simulated budget of a mock run, or refuse as the node would."""
        budget = self.simulated_budget(node)
        lines: list[tuple[str, BudgetLine]] = [("", budget)]
        if dataset in budget.per_dataset:
            lines.append((f" for dataset {dataset!r}", budget.per_dataset[dataset]))
        for where, line in lines:
            if epsilon > line.epsilon_remaining or delta > line.delta_remaining:
                need = cost(epsilon, delta if delta > line.delta_remaining else 0.0)
                left = f"{line.epsilon_remaining:.4g}"
                if delta > line.delta_remaining:
                    left += f", δ={line.delta_remaining:.3g}"
                raise BudgetExceeded(
                    f"needs {need}, {left} left on {node.name}{where} in this mock run's "
                    "simulated budget — on the node this release would be refused: spend "
                    "less, or ask the owner to raise your budget",
                    {"node": node.name, "mock": True},
                )
        per = dict(budget.per_dataset)
        if dataset in per:
            per[dataset] = _debit(per[dataset], epsilon, delta)
        self.simulated[node.name] = _debit(budget, epsilon, delta).model_copy(
            update={"per_dataset": per}
        )

    def summary(self, budgets: Mapping[str, Budget]) -> list[str]:
        """One line per node on what the cell's releases cost, for after the cell."""
        lines = []
        for node, spent in self.spent.items():
            n = f"{spent.releases} release{'s' if spent.releases != 1 else ''}"
            price = cost(spent.epsilon, spent.delta)
            if self.mode == "mock":
                b = self.simulated[node]
                lines.append(
                    f"mock run: {n} on the mock data of {node} would cost {price} "
                    f"(simulated: ε {b.epsilon_remaining:.4g} of {b.epsilon_total:.4g} left "
                    "after them); no query was sent to the node, nothing was charged"
                )
            elif self.mode == "preview":
                left = _left(budgets.get(node), "now")
                lines.append(f"preview: {n} on {node} would cost {price}{left}; nothing was spent")
            else:
                lines.append(f"{node}: {n} charged {price}{_left(budgets.get(node), 'now')}")
        return lines


class CellDataset(RemoteDataset):
    """A dataset bound in a ``%%rds`` cell: a RemoteDataset whose releases follow the cell.

    ``remote`` is the session's handle on the same dataset (whose mock data is downloaded once
    per kernel); ``run`` decides what releases do (see the module).
    """

    def __init__(self, remote: RemoteDataset, run: CellRun) -> None:
        super().__init__(remote.node, remote.name, remote.schema)
        self.remote = remote
        self.run = run
        self.sends_jobs = run.mode == "remote"

    def __repr__(self) -> str:
        where = {"mock": "the mock data of", "preview": "previews on", "remote": "releases on"}
        return f"<{self.name}: {where[self.run.mode]} {self.node.name}>"

    def query(self) -> CellQuery:
        """An empty query on this dataset; its epsilon defaults to the cell's ``--epsilon``."""
        return CellQuery(self.name, runner=self)

    def mock_frame(self) -> pl.DataFrame:
        """The mock data, shared with the session's handle (downloaded once per kernel)."""
        return self.remote.mock_frame()

    # ------------------------------------------------------------------ QueryRunner

    def preview(self, spec: QuerySpec) -> Preview:
        """Cost and accuracy: from the node, or in a mock run from the mock run itself."""
        with self._context():
            if self.run.mode != "mock":
                return super().preview(spec)
            frame = super().run_on_mock(spec)
            rows, note = self._accuracy_at_row_count(spec, frame.attrs["summary"])
            return Preview(
                node=self.node.name,
                dataset=self.name,
                epsilon=float(frame.attrs["epsilon_spent"]),
                delta=float(frame.attrs["delta_spent"]),
                requested_epsilon=spec.epsilon,
                requested_delta=spec.delta,
                rows=rows,
                budget=self.run.simulated_budget(self.node),
                accuracy_note=note,
            )

    def release(self, spec: QuerySpec, request_id: str | None = None) -> pd.DataFrame:
        """Release as the cell says: on mock data, as a preview, or on the node."""
        with self._context():
            if self.run.mode == "remote":
                frame = super().release(spec, request_id)
                if not frame.attrs["replayed"]:
                    self.run.record(
                        self.node.name, frame.attrs["epsilon_spent"], frame.attrs["delta_spent"]
                    )
                return frame
            if self.run.mode == "preview":
                preview = super().preview(spec)
                self.run.show(preview)
                self.run.record(self.node.name, preview.epsilon, preview.delta)
                return super().run_on_mock(spec)
            frame = super().run_on_mock(spec)
            epsilon, delta = frame.attrs["epsilon_spent"], frame.attrs["delta_spent"]
            self.run.charge_simulated(self.node, self.name, epsilon, delta)
            self.run.record(self.node.name, epsilon, delta)
            return frame

    def run_on_mock(self, spec: QuerySpec) -> pd.DataFrame:
        """Run ``spec`` locally on the mock data, in any mode; free and not counted."""
        with self._context():
            return super().run_on_mock(spec)

    @contextmanager
    def _context(self) -> Iterator[None]:
        try:
            yield
        except RdsError as exc:
            exc.detail.setdefault("node", self.node.name)
            raise


class CellQuery(Query):
    """A query built in a ``%%rds`` cell: without an epsilon, it takes the cell's ``--epsilon``."""

    def preview(self, epsilon: float | None = None, delta: float = 0.0) -> Any:
        """Cost and ± accuracy at this privacy loss (default: the cell's). Spends nothing."""
        return super().preview(self._run().epsilon_for(epsilon, "preview"), delta)

    def release(
        self, epsilon: float | None = None, delta: float = 0.0, request_id: str | None = None
    ) -> pd.DataFrame:
        """Release as the cell says, at this privacy loss (default: the cell's ``--epsilon``)."""
        return super().release(self._run().epsilon_for(epsilon, "release"), delta, request_id)

    def run_on_mock(self, epsilon: float | None = None, delta: float = 0.0) -> pd.DataFrame:
        """Run on the mock data, at this epsilon (default: the cell's, or 1)."""
        run = self._run()
        return super().run_on_mock(epsilon if epsilon is not None else run.epsilon or 1.0, delta)

    def _run(self) -> CellRun:
        runner = self.runner
        assert isinstance(runner, CellDataset)
        return runner.run


# --------------------------------------------------------------------------- running the cell


def bindable(name: str) -> bool:
    """Whether a dataset name can be bound as a Python variable."""
    return name.isidentifier() and not keyword.iskeyword(name)


@contextmanager
def bound(namespace: MutableMapping[str, Any], names: Mapping[str, Any]) -> Iterator[None]:
    """Bind ``names`` in ``namespace`` for the block; restore what was there after.

    A name the cell assigned itself keeps the cell's value.
    """
    before = {name: namespace.get(name, _MISSING) for name in names}
    namespace.update(names)
    try:
        yield
    finally:
        for name, value in names.items():
            if namespace.get(name, _MISSING) is value:
                if before[name] is _MISSING:
                    del namespace[name]
                else:
                    namespace[name] = before[name]


def execute(shell: InteractiveShell, source: str, namespace: dict[str, Any]) -> Any:
    """Run a cell's code in ``namespace`` and return its last expression's value, if any.

    IPython syntax (``%magics``, ``!commands``) works as in any cell; a last expression followed
    by ``;`` is not returned, as in any cell.
    """
    __tracebackhide__ = True  # IPython hides this frame in the scientist's tracebacks
    code: str = shell.transform_cell(source)  # type: ignore[no-untyped-call]
    filename = shell.compile.cache(code, shell.execution_count, raw_code=source)
    tree = shell.compile.ast_parse(code, filename=filename)
    assert isinstance(tree, ast.Module)
    body, last = list(tree.body), None
    tail = body[-1] if body else None
    if isinstance(tail, ast.Expr) and not code.rstrip().endswith(";"):
        body.pop()
        last = ast.Expression(tail.value)
    compiler: Callable[..., Any] = shell.compile  # accepts ASTs, like compile()
    exec(compiler(ast.Module(body, type_ignores=[]), filename, "exec"), namespace)  # noqa: S102
    if last is None:
        return None
    return eval(compiler(last, filename, "eval"), namespace)  # noqa: S307


Line = TypeVar("Line", bound="BudgetLine")


def _debit(line: Line, epsilon: float, delta: float) -> Line:
    return line.model_copy(
        update={
            "epsilon_spent": line.epsilon_spent + epsilon,
            "epsilon_remaining": line.epsilon_remaining - epsilon,
            "delta_spent": line.delta_spent + delta,
            "delta_remaining": line.delta_remaining - delta,
        }
    )


def _left(budget: Budget | None, when: str) -> str:
    if budget is None:
        return ""
    return f"; ε {budget.epsilon_remaining:.4g} of {budget.epsilon_total:.4g} left {when}"
