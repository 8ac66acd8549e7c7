"""The revisions of the node database, oldest first (Alembic reads every file here but this one).

``r0001_schema``: the schema when migrations began. See the package docstring for the rules.
"""
