"""Hold out a dataset's validation images before anything else sees them (kohya's ``split_train_val``).

Why here, in the data layer: the split happens per subset right after the scan, so reg balancing,
repeats, buckets, caches and the step count only ever see the training images, and a validation
image can never reach a training batch.

kohya's rule: a subset's images (in scan order) are shuffled with ``random.Random(validation_seed)``;
training keeps the first ``ceil(n * (1 - split))``, validation the last ``round(n * split)``.
Regularisation subsets are never split and give no validation images. Where kohya's two counts
overlap (e.g. 3 images at 0.5: 2 + 2) we keep the overlap in training only, so the two sets stay
disjoint. Validation images are used once per evaluation (no repeats).
"""

from __future__ import annotations

import math
import random
from typing import List, Sequence, Tuple

from .records import ImageRecord


def split_counts(n: int, split: float) -> Tuple[int, int]:
    """(training, validation) image counts for ``n`` images; the two never add up to more than ``n``."""
    if split <= 0 or n == 0:
        return n, 0
    train = math.ceil(n * (1 - split))
    return train, min(round(n * split), n - train)


def split_records(records: Sequence[ImageRecord], split: float, seed: int) -> Tuple[List[ImageRecord], List[ImageRecord]]:
    """(training records, validation records) of one subset, as described in the module docstring."""
    if split <= 0 or not records:
        return list(records), []
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    n_train, n_val = split_counts(len(shuffled), split)
    validation = shuffled[len(shuffled) - n_val:] if n_val else []
    for rec in validation:
        rec.num_repeats = 1
    return shuffled[:n_train], validation
