"""``python -m neobert_tasks.suite glue|table …`` (see `neobert_tasks.suite.cli`)."""

from neobert_tasks.suite.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
