"""Regularisation balancing arithmetic (kohya's DreamBoothDataset) and the resulting epoch length."""

import math
import os

from library.data.dataset import TrainDataset
from library.data.params import DataOptions, SubsetParams
from library.data.prepare import balance_regularization, prepare_datasets
from library.data.records import ImageRecord

from .helpers import make_folder


def _recs(n, repeats=1):
    sub = SubsetParams(num_repeats=repeats, is_reg=True)
    return [ImageRecord(key=str(i), path=None, caption="", subset=sub, cache_stem="", num_repeats=repeats) for i in range(n)]


def test_more_reg_than_train_uses_the_first_ones():
    reg = _recs(752)
    used, unused = balance_regularization(30 * 25, reg)
    assert len(used) == 750 and len(unused) == 2
    assert sum(r.num_repeats for r in used) == 750 and all(r.num_repeats == 1 for r in used)


def test_fewer_reg_images_get_round_robin_repeats():
    reg = _recs(100)
    used, unused = balance_regularization(750, reg)
    assert not unused and sum(r.num_repeats for r in used) == 750
    assert [r.num_repeats for r in used] == [8] * 50 + [7] * 50  # 100 + 6 rounds of 100 + 50 more


def test_reg_folder_repeats_count_first():
    reg = _recs(100, repeats=2)
    used, _ = balance_regularization(750, reg)
    assert sum(r.num_repeats for r in used) == 750
    assert [r.num_repeats for r in used] == [8] * 50 + [7] * 50  # 200 + 5 rounds + 50


def test_no_train_or_no_reg():
    assert balance_regularization(0, _recs(3))[0] == []
    assert balance_regularization(10, []) == ([], [])


def test_dataset_30x25_vs_752_reg_epoch_length(tmp_path):
    make_folder(tmp_path / "img", "25_sks man", 30, size=(16, 16))
    make_folder(tmp_path / "reg", "1_man", 752, size=(16, 16))
    for bs in (1, 4):
        opts = DataOptions(train_data_dir=str(tmp_path / "img"), reg_data_dir=str(tmp_path / "reg"), resolution=64, train_batch_size=bs, prior_loss_weight=0.5)
        (ds,) = prepare_datasets(opts)
        assert ds.num_train_images == 750 and ds.num_reg_images == 752
        assert len(ds.unused_reg) == 2 and [os.path.basename(r.path) for r in ds.unused_reg] == ["750.png", "751.png"]
        assert ds.samples_per_epoch == 1500
        assert ds.batches_per_epoch == math.ceil(1500 / bs)
        train = TrainDataset([ds], seed=1)
        assert len(train) == math.ceil(1500 / bs)
    plan = train.plan(1)
    is_reg = [ds.records[i].is_reg for _, idxs in plan for i in idxs]
    assert is_reg.count(True) == 750 and is_reg.count(False) == 750
    weights = {}
    for i in range(10):
        b = train[i]
        for w, reg in zip(b["loss_weights"].tolist(), b["is_reg"]):
            weights.setdefault(reg, set()).add(w)
    assert weights.get(True, {0.5}) == {0.5} and weights.get(False, {1.0}) == {1.0} and weights
