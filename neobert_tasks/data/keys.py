"""Names of the batch keys and dataset columns that `data/` writes and `tasks/` reads, declared once.

A row of a split is an *example*, and its identity is its `EXAMPLE_INDEX`: its row number in the split as
loaded (before empty texts are skipped), or the dataset's own index column where it has one (GLUE's `idx`).
Every output a task writes back is keyed by it. Tasks that cut an example into several *windows* (token
classification, question answering, long documents) carry the example's index on each window.

A contrastive (sentence-embedding) row holds several texts, one per *role*; each is tokenized and padded on
its own, under keys named as sentence-transformers names them: `role_key(ANCHOR, INPUT_IDS)` is
`anchor_input_ids`.
"""

from __future__ import annotations

# What the model's forward takes (`NeoBERTTask.model_inputs` keeps these and drops the bookkeeping below).
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"  # packed rows: positions restart at each document
CU_SEQLENS = "cu_seqlens"  # packed rows: cumulative document lengths, for varlen attention
LABELS = "labels"
MODEL_INPUT_KEYS = (INPUT_IDS, ATTENTION_MASK, POSITION_IDS, CU_SEQLENS, LABELS)

# Contrastive rows: the query (anchor), the text that matches it (positive) and an optional hard negative.
ANCHOR = "anchor"
POSITIVE = "positive"
NEGATIVE = "negative"
ROLES = (ANCHOR, POSITIVE, NEGATIVE)
# Per row, one hash of each role's token ids: what duplicate-free batching compares (not a batch key).
TEXT_HASHES = "text_hashes"


def role_key(role: str, key: str) -> str:
    """The batch key of `key` (e.g. `INPUT_IDS`) for the texts of `role`: `anchor_input_ids`."""
    return f"{role}_{key}"


# The batches of contrastive rows: each role's token ids and mask (a pair batch has no negative keys).
PAIR_BATCH_KEYS = tuple(role_key(role, key) for role in ROLES for key in (INPUT_IDS, ATTENTION_MASK))

# Bookkeeping that travels with a batch.
EXAMPLE_INDEX = "example_index"  # the example a row (or window) belongs to
WINDOW_INDEX = "window_index"  # question answering: a window's own row in the tokenized split
EXAMPLE_POSITION = "example_position"  # long documents: a window's example among the batch's examples
WORD_IDS = "word_ids"  # token classification: the word each token starts or continues (-100: none)
START_POSITIONS = "start_positions"  # question answering: the answer's first token in the window
END_POSITIONS = "end_positions"  # question answering: the answer's last token in the window

# The batches of one-row-per-example tasks: the model inputs and the example's index.
EXAMPLE_BATCH_KEYS = (INPUT_IDS, ATTENTION_MASK, LABELS, EXAMPLE_INDEX)

# A source dataset's own index column (GLUE's spelling); when present it is the examples' index.
SOURCE_INDEX_COLUMN = "idx"

# The example index's column in prediction files: GLUE's submission format calls it `index`.
PREDICTION_INDEX_COLUMN = "index"
