"""Time of QA post-processing on synthetic logits the size of the SQuAD v1.1 dev set.

    python -m bench.qa_postprocessing [--examples 10570] [--features 10800] [--length 384] [--repeats 3]

Builds ``--examples`` contexts of about 700 characters, cut into 384-token features laid out as
``[CLS] question [SEP] context [SEP]`` with realistic character offsets (``None`` outside the context);
``--features - --examples`` examples get a second, overlapping window. Logits are random float32 arrays
padded to ``--length`` as a gathered evaluation run gives them. Prints the best of ``--repeats`` timings
of ``postprocess_predictions``, for v1.1 and for v2.0, in seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from neobert_tasks.tasks.qa_postprocessing import postprocess_predictions

QUESTION_TOKENS = 15
WORDS_PER_CONTEXT = 120  # about 700 characters with the word lengths below


def synthetic_context(random: np.random.Generator) -> tuple[str, list[tuple[int, int]]]:
    """A context of random lower-case words and the (start, end) character offsets of its words."""
    word_lengths = random.integers(2, 9, size=WORDS_PER_CONTEXT).tolist()
    offsets, position = [], 0
    for length in word_lengths:
        offsets.append((position, position + length))
        position += length + 1
    return " ".join("x" * length for length in word_lengths), offsets


def synthetic_inputs(example_count: int, feature_count: int, length: int, seed: int = 0) -> dict:
    """Keyword arguments of postprocess_predictions for a synthetic dev set."""
    random = np.random.default_rng(seed)
    contexts, example_indices, feature_offsets = [], [], []
    # The first (features - examples) examples are split in two windows that overlap by half.
    two_window_examples = feature_count - example_count
    for example in range(example_count):
        context, word_offsets = synthetic_context(random)
        contexts.append(context)
        windows = [word_offsets]
        if example < two_window_examples:
            half = len(word_offsets) // 2
            windows = [word_offsets[: half + half // 2], word_offsets[half // 2 :]]
        for window in windows:
            example_indices.append(example)
            feature_offsets.append([None] * (QUESTION_TOKENS + 2) + window + [None])
    start_logits = [random.standard_normal(length).astype(np.float32) for _ in feature_offsets]
    end_logits = [random.standard_normal(length).astype(np.float32) for _ in feature_offsets]
    return {
        "contexts": contexts,
        "feature_example_indices": example_indices,
        "feature_offsets": feature_offsets,
        "start_logits": start_logits,
        "end_logits": end_logits,
    }


def best_time(inputs: dict, repeats: int, **options) -> float:
    """Fewest seconds one call of postprocess_predictions took over ``repeats`` calls."""
    timings = []
    for _ in range(repeats):
        began = time.perf_counter()
        postprocess_predictions(**inputs, **options)
        timings.append(time.perf_counter() - began)
    return min(timings)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10570)
    parser.add_argument("--features", type=int, default=10800)
    parser.add_argument("--length", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args(argv)
    if arguments.features < arguments.examples:
        parser.error("--features must be at least --examples (every example has a feature).")
    return arguments


def main() -> None:
    arguments = parse_arguments()
    inputs = synthetic_inputs(arguments.examples, arguments.features, arguments.length)
    print(f"{arguments.examples} examples, {arguments.features} features of length {arguments.length}")
    print(f"v1.1: {best_time(inputs, arguments.repeats):.3f} s")
    print(f"v2.0: {best_time(inputs, arguments.repeats, version_2=True):.3f} s")


if __name__ == "__main__":
    main()
