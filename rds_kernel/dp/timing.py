"""How long a release may take, from public facts only: the time its answer is padded to.

OpenDP protects what a release *says*, not how long it takes. How long it takes can depend on
the private data, cheaply: an attacker review measured an unknown-key group-by at about 6 µs
per group present in the data (so a release at ε = 1e-6 that released nothing still counted
the matching rows to a few percent), and a filter that Parquet's row-group statistics can rule
out skips the whole scan (whether anyone is older than 94, from the clock). So a release whose
cost can depend on the data — it filters, groups or truncates per person — answers no earlier
than a deadline computed here from its plan and public facts: the number of public keys (or,
with unknown keys, the most groups there could be) and a bound on the rows.

The costs are upper bounds measured on the project's 2-core machines with OpenDP 0.16 and
polars 1.36 on LZ4 Parquet (``benchmarks/abuse.py`` prints the padding against the real time),
doubled; ``release_padding`` in the node settings multiplies them for a slower host. A release
that still takes longer than its deadline is logged for the owner, with the factor to set.

>>> round(deadline(rows=16_384, components=2, groups=1, public_keys=True), 4)
0.0122
"""

from __future__ import annotations

__all__ = [
    "BASE",
    "PER_KEY_GROUP",
    "PER_ROW",
    "PER_ROW_CANDIDATE",
    "PER_UNKNOWN_GROUP",
    "SAFETY",
    "deadline",
]

BASE = 0.005  # seconds: planning, decoding and the first row group
PER_ROW = 20e-9  # seconds per row and component: scan, filter, clamp, sum (measured ~5 ns)
PER_KEY_GROUP = 70e-6  # per public key and component: join and noise (measured ~50 µs)
PER_UNKNOWN_GROUP = 8e-6  # per possible group and component with unknown keys (measured ~3 µs)
PER_ROW_CANDIDATE = 1e-9  # per row and quantile candidate (measured ~0.5 ns)
SAFETY = 2.0


def deadline(
    *, rows: int, components: int, groups: int, public_keys: bool, candidates: int = 0
) -> float:
    """Seconds a release of this shape may take on any data of at most ``rows`` rows.

    ``groups`` is the number of public keys, or with unknown keys the most groups there can be
    (at most ``rows``); 1 without a group-by. ``candidates`` counts every quantile's.
    """
    per_group = PER_KEY_GROUP if public_keys else PER_UNKNOWN_GROUP
    per_row = (components + 1) * PER_ROW + candidates * PER_ROW_CANDIDATE
    return SAFETY * (BASE + rows * per_row + groups * components * per_group)
