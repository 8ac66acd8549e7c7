"""Bundled demo data: synthetic patients of two hospitals and their public schema.

``rds demo`` and the course use it to stand up two owner nodes with data worth querying.

>>> df = generate_patients("hospital_b", n=5)
>>> df.columns == patients_schema().names
True
"""

from rds_kernel.demo.patients import (
    HOSPITALS,
    generate_patients,
    patients_schema,
    write_demo_dataset,
)

__all__ = ["HOSPITALS", "generate_patients", "patients_schema", "write_demo_dataset"]
