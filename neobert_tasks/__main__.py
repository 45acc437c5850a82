"""``python -m neobert_tasks fit|validate|test|predict --config …``."""

from neobert_tasks.cli import main

if __name__ == "__main__":
    main()
