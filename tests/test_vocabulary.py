"""The names several layers accept (data layouts, resize filters, samplers, schedulers, losses) come from library/vocabulary.py."""

import ast
from pathlib import Path

from library import vocabulary
from library.data import dataset_config, params
from library.data.images import _FILTERS
from library.inference.pipelines import SAMPLERS
from library.options import BY_NAME, dataset_keys
from library.options import definitions
from library.train import losses, schedulers

REPO = Path(__file__).resolve().parents[1]


def test_every_layer_uses_the_vocabulary():
    assert BY_NAME["data_layout"].choices is vocabulary.DATA_LAYOUTS
    assert BY_NAME["resize_interpolation"].choices is vocabulary.INTERPOLATIONS
    assert BY_NAME["sample_sampler"].choices is vocabulary.SAMPLERS
    assert params.DATA_LAYOUTS is vocabulary.DATA_LAYOUTS and params.SUBSET_LAYOUTS is vocabulary.SUBSET_LAYOUTS
    assert dataset_config.DATA_LAYOUTS is vocabulary.DATA_LAYOUTS
    assert dataset_keys.KEYS["resize_interpolation"].choices is vocabulary.INTERPOLATIONS
    assert dataset_keys.KEYS["layout"].choices is vocabulary.SUBSET_LAYOUTS
    assert tuple(_FILTERS) == vocabulary.INTERPOLATIONS
    assert tuple(SAMPLERS) == vocabulary.SAMPLERS
    assert BY_NAME["loss_type"].choices is vocabulary.LOSS_TYPES is losses.LOSS_TYPES
    assert BY_NAME["huber_schedule"].choices is vocabulary.HUBER_SCHEDULES is losses.HUBER_SCHEDULES
    assert definitions.LR_SCHEDULERS is vocabulary.LR_SCHEDULERS is schedulers.SCHEDULER_NAMES


def test_no_product_module_spells_a_vocabulary_again():
    """A literal holding more than half the names of one vocabulary outside vocabulary.py is a copy (a
    smaller subset, like the layouts a folder can be detected as, is logic of its own)."""
    lists = [set(v) for v in (vocabulary.DATA_LAYOUTS, vocabulary.INTERPOLATIONS, vocabulary.SAMPLERS,
                              vocabulary.LR_SCHEDULERS, vocabulary.LOSS_TYPES, vocabulary.HUBER_SCHEDULES)]
    copies = []
    for path in [*REPO.glob("library/**/*.py"), *REPO.glob("networks/*.py"), *REPO.glob("tools/*.py")]:
        if path.name == "vocabulary.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                names = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                if any(len(names & words) > len(words) // 2 for words in lists):
                    copies.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not copies, copies


def test_the_vocabulary_is_a_leaf():
    tree = ast.parse((REPO / "library" / "vocabulary.py").read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
