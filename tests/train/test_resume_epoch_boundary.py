"""A state saved after an epoch's last batch says so in train_state.json (``epoch_finished``), so a resume
starts the next epoch even when the batches per epoch changed (--resume_with_changes); states written
before the field existed still resume at the next epoch."""

import json
import shutil

from library.options import namespace_from
from library.train.entry import train
from tests.train.conftest import base_values


def _one_epoch(tiny_ckpt, demo_data, out):
    # 8 images x 10 repeats / batch 8 = 10 steps in the epoch; the final state is saved after its last batch
    values = base_values(tiny_ckpt("sd1"), demo_data, out, train_batch_size=8, max_train_steps=None,
                         max_train_epochs=1, save_state=True)
    assert train(namespace_from(values)).steps == 10
    return values, out / "t-state"


def test_resume_after_a_finished_epoch_starts_the_next_one_with_another_batch_size(tiny_ckpt, demo_data, tmp_path):
    values, state = _one_epoch(tiny_ckpt, demo_data, tmp_path / "a")
    saved = json.loads((state / "train_state.json").read_text())
    assert (saved["epoch"], saved["position"], saved["epoch_finished"]) == (1, 10, True)
    # batch 4: 20 batches per epoch; epoch 2 is all that is left of a 2-epoch run (the old position-10
    # marker would have read "half of epoch 1 done" and trained 10 extra steps)
    resumed = train(namespace_from({**values, "train_batch_size": 4, "max_train_epochs": 2, "save_every_n_epochs": 1,
                                    "resume": str(state),
                                    "output_dir": str(tmp_path / "b"),
                                    "resume_with_changes": ["datasets", "batches_per_epoch"]}))
    assert resumed.steps == 10 + 20
    assert not (tmp_path / "b" / "t-000001.safetensors").exists()


def test_a_state_from_before_the_field_still_resumes_at_the_next_epoch(tiny_ckpt, demo_data, tmp_path):
    values, state = _one_epoch(tiny_ckpt, demo_data, tmp_path / "a")
    older = tmp_path / "older-state"
    shutil.copytree(state, older)
    saved = json.loads((older / "train_state.json").read_text())
    del saved["epoch_finished"]
    (older / "train_state.json").write_text(json.dumps(saved))
    resumed = train(namespace_from({**values, "max_train_epochs": 2, "save_every_n_epochs": 1, "resume": str(older),
                                    "output_dir": str(tmp_path / "b")}))
    assert resumed.steps == 20
    # epoch 1 was not run again: its end-of-epoch save would have written t-000001 into the new folder
    assert not (tmp_path / "b" / "t-000001.safetensors").exists()
