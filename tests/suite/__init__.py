"""Tests of the GLUE suite (neobert_tasks.suite): planning, table math, real tiny runs, README commands."""
