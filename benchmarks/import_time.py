"""Cold cost of `import rds_kernel` and `%load_ext rds_kernel` in a fresh IPython shell.

Each run is a new Python process (cold module cache): it starts an IPython InteractiveShell
first — a Jupyter kernel has IPython loaded before any cell runs — then times, in that order,
`import rds_kernel` and `%load_ext rds_kernel`. It also lists any slow module that got imported
(pandas, polars, ipywidgets, requests, opendp, pydantic, the server stack): there should be
none.

Run:  .venv/bin/python benchmarks/import_time.py [--runs 9] [--check]
Target (issue 3): import + %load_ext <= 0.4 s (median); --check exits 1 above it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

TARGET_SECONDS = 0.4
SLOW = (
    "pandas",
    "polars",
    "ipywidgets",
    "requests",
    "opendp",
    "numpy",
    "pyarrow",
    "fastapi",
    "pydantic",
)

PROBE = """
import json, sys, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t0 = time.perf_counter()
import rds_kernel
t1 = time.perf_counter()
shell.run_line_magic("load_ext", "rds_kernel")
t2 = time.perf_counter()
slow = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[1])))
print(json.dumps({"import": t1 - t0, "load_ext": t2 - t1, "slow": slow}))
"""


def run_once() -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(SLOW)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="fresh processes to time")
    parser.add_argument("--check", action="store_true", help="exit 1 if over the target")
    args = parser.parse_args()
    runs = [run_once() for _ in range(args.runs)]
    imports = [r["import"] for r in runs]
    totals = [r["import"] + r["load_ext"] for r in runs]
    slow = sorted({m for r in runs for m in r["slow"]})
    median = statistics.median(totals)
    print(f"runs: {args.runs} fresh processes (IPython already loaded, as in a kernel)")
    print(f"import rds_kernel:              median {statistics.median(imports) * 1000:6.1f} ms")
    print(
        f"import rds_kernel + %load_ext:  median {median * 1000:6.1f} ms "
        f"(min {min(totals) * 1000:.1f}, max {max(totals) * 1000:.1f}; "
        f"target <= {TARGET_SECONDS * 1000:.0f} ms)"
    )
    print(f"slow modules imported: {', '.join(slow) or 'none'}")
    return 1 if args.check and (median > TARGET_SECONDS or slow) else 0


if __name__ == "__main__":
    raise SystemExit(main())
