"""Tests of the notebooks in notebooks/ (executed with nbclient) and of neobert_tasks.analysis."""
