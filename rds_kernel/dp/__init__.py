"""The DP layer: query spec → OpenDP measurement, exact cost, accuracy, release.

``prepare(validated_query, schema)`` compiles the query onto a schema-only frame, calibrates
the noise analytically to the requested ``(epsilon, delta)`` and verifies the cost with
OpenDP's privacy map; ``execute(prepared, lazy_frame)`` runs it on the private rows.
"""

from rds_kernel.dp.engine import PreparedQuery, ReleaseResult, execute, prepare

__all__ = ["PreparedQuery", "ReleaseResult", "execute", "prepare"]
