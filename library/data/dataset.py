"""The torch Dataset a training loop iterates: one item = one batch from one bucket.

Why: bucketed training needs every batch to hold images of one size, so batching happens here, not
in the DataLoader; and the order must be reproducible from (seed, epoch) alone so a resumed run sees
the same batches.

Interface::

    datasets = prepare_datasets(DataOptions(train_data_dir="img", resolution=512, enable_bucket=True))
    ds = TrainDataset(datasets, seed=42)            # optional: latent_cache=..., text_cache=...
    loader = make_dataloader(ds, num_workers=2)     # works with accelerate.prepare
    for epoch in range(1, epochs + 1):              # epochs count from 1, as in kohya
        ds.set_epoch(epoch)
        for batch in loader: ...

``len(ds)`` is the number of batches per epoch (the same every epoch). ``ds[i]`` is batch i of the
current epoch; ``ds[(epoch, i)]`` of any epoch. A batch is a dict:

- ``images``: float32 [B, 3, H, W] in [-1, 1], or None when latents come from a ``LatentCache``
- ``latents``: float32 [B, C, H/8, W/8] unscaled VAE latents, or None
- ``captions``: list of B processed captions (captions.process_caption)
- ``loss_weights``: float32 [B]: ``prior_loss_weight`` for reg images, 1.0 otherwise
- ``original_sizes_hw``, ``crop_top_lefts``, ``target_sizes_hw``: int64 [B, 2] (SDXL conditioning)
- ``flipped``, ``is_reg``: lists of B bools; ``image_keys``: list of B record keys
- ``text_encoder_outputs``: dict of [B, ...] tensors from a ``TextEncoderOutputCache``, or None
- ``masks``: float32 [B, 1, H, W] loss masks in [0, 1] (``masks=True``, i.e. masked_loss; masks.py), or None

Per epoch the items of each bucket (image x repeats) are shuffled and cut into batches (the last
batch of a bucket may be short, as in kohya), then all batches of all datasets are shuffled, using
``random.Random`` seeded from (seed, epoch) only. Flip, random crop and colour augmentation use a
stream seeded from (seed, epoch, sample position); captions use ``captions.caption_rng`` likewise.
An image that fails to decode is replaced by another of the same bucket with a warning, or stops
training with its path when ``stop_on_bad_image`` is set.
"""

from __future__ import annotations

import logging
import random
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .buckets import crop_offsets, size_conditioning
from .cache import latent_caching_blockers  # noqa: F401  (re-exported: the loop asks the dataset module)
from .captions import caption_rng, process_caption
from .errors import DatasetError
from .images import color_aug, prepare_pixels, to_tensor
from .masks import prepare_mask
from .prepare import PreparedDataset
from .records import ImageRecord
from .text_cache import static_caption

logger = logging.getLogger("lorasmith.data")
Batch = Tuple[int, Tuple[int, ...]]  # (dataset index, record indices)


class TrainDataset(torch.utils.data.Dataset):
    """Bucketed batches over one or more prepared datasets; see the module docstring."""

    def __init__(
        self,
        datasets: Sequence[PreparedDataset],
        seed: int = 0,
        *,
        latent_cache=None,
        text_cache=None,
        stop_on_bad_image: bool = False,
        masks: bool = False,
    ):
        self.datasets = list(datasets)
        self.masks = masks
        self.seed = int(seed)
        self.latent_cache = latent_cache
        self.text_cache = text_cache
        self.stop_on_bad_image = stop_on_bad_image
        self.epoch = 1
        self._excluded: set = set()
        self._build_items()

    # ---- planning ---------------------------------------------------------------------------

    def _build_items(self) -> None:
        """Per dataset: bucket -> record indices repeated num_repeats (fixed base order)."""
        self._items: List[Dict[Tuple[int, int], List[int]]] = []
        for ds in self.datasets:
            by_bucket: Dict[Tuple[int, int], List[int]] = {}
            for idx, rec in enumerate(ds.records):
                if rec.key in self._excluded:
                    continue
                by_bucket.setdefault(rec.bucket_reso, []).extend([idx] * rec.num_repeats)
            self._items.append(by_bucket)
        self._length = sum(
            -(-len(items) // ds.params.batch_size) for ds, by_bucket in zip(self.datasets, self._items) for items in by_bucket.values()
        )
        if self._length == 0:
            raise DatasetError("the dataset has no usable images left; run tools/check_dataset.py to see why")
        self._plan_cache: Optional[Tuple[int, List[Batch], List[int]]] = None

    def exclude(self, keys) -> None:
        """Drop records (e.g. images that failed latent caching) and rebuild the batch plan."""
        self._excluded |= set(keys)
        self._build_items()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan(self, epoch: int) -> List[Batch]:
        """All batches of ``epoch`` in order, as (dataset index, record indices)."""
        return self._plan(epoch)[0]

    def _plan(self, epoch: int) -> Tuple[List[Batch], List[int]]:
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1], self._plan_cache[2]
        rng = random.Random(f"buckets:{self.seed}:{epoch}")
        batches: List[Batch] = []
        for d, (ds, by_bucket) in enumerate(zip(self.datasets, self._items)):
            bs = ds.params.batch_size
            for reso in sorted(by_bucket):
                items = list(by_bucket[reso])
                rng.shuffle(items)
                batches.extend((d, tuple(items[k : k + bs])) for k in range(0, len(items), bs))
        rng.shuffle(batches)
        starts, pos = [], 0
        for _, idxs in batches:
            starts.append(pos)
            pos += len(idxs)
        self._plan_cache = (epoch, batches, starts)
        return batches, starts

    def __len__(self) -> int:
        return self._length

    # ---- loading ----------------------------------------------------------------------------

    def __getitem__(self, index) -> dict:
        epoch, i = index if isinstance(index, tuple) else (self.epoch, index)
        batches, starts = self._plan(epoch)
        d, idxs = batches[i]
        ds = self.datasets[d]
        samples = [self._sample(ds, d, idx, epoch, starts[i] + j) for j, idx in enumerate(idxs)]
        return self._collate(samples)

    def _sample(self, ds: PreparedDataset, d: int, idx: int, epoch: int, position: int) -> dict:
        rec = ds.records[idx]
        aug = random.Random(f"aug:{self.seed}:{epoch}:{position}")
        sub = rec.subset
        flipped = bool(sub.flip_aug and aug.random() < 0.5)
        out = {"rec": rec, "flipped": flipped, "image": None, "latents": None}
        if self.latent_cache is not None:
            out["latents"] = self.latent_cache.get(rec, flipped)
            crop = crop_offsets(rec.resized_size, rec.bucket_reso)
            if self.masks:
                out["mask"] = self.latent_cache.get_mask(rec, flipped)
        else:
            px, rec = self._pixels_with_fallback(ds, d, idx, aug)
            arr = color_aug(px.array, aug) if rec.subset.color_aug else px.array
            if flipped:
                arr = arr[:, ::-1]
            out["image"], out["rec"], crop = to_tensor(arr), rec, px.crop_left_top
            if self.masks:
                out["mask"] = torch.from_numpy(prepare_mask(rec, px.resized_size, px.crop_left_top, rec.bucket_reso, flipped))
        rec = out["rec"]
        out["size_cond"] = size_conditioning(rec.size, rec.resized_size, rec.bucket_reso, crop, flipped)
        if self.text_cache is not None:
            out["caption"], out["te"] = static_caption(rec), self.text_cache.get(rec)
        else:
            out["caption"], out["te"] = process_caption(rec.caption, rec.subset, caption_rng(self.seed, epoch, position), epoch), None
        out["weight"] = ds.params.prior_loss_weight if rec.is_reg else 1.0
        return out

    def _pixels_with_fallback(self, ds: PreparedDataset, d: int, idx: int, aug: random.Random):
        rec = ds.records[idx]
        try:
            return self._pixels(rec, aug), rec
        except (DatasetError, OSError) as e:
            if self.stop_on_bad_image:
                raise DatasetError(f"{e} (stop_on_bad_image is set)") from None
            first_error = e
        bucket = sorted(set(self._items[d][rec.bucket_reso]) - {idx})
        for other in bucket:
            cand = ds.records[other]
            try:
                px = self._pixels(cand, aug)
            except (DatasetError, OSError):
                continue
            logger.warning(f"{first_error}; using {cand.display_name} from the same bucket instead")
            return px, cand
        raise DatasetError(f"no image of bucket {rec.bucket_reso} can be decoded (first error: {first_error})")

    @staticmethod
    def _pixels(rec: ImageRecord, aug: random.Random):
        s = rec.subset
        return prepare_pixels(
            rec.source(), rec.bucket_reso, name=rec.display_name, random_crop=s.random_crop, rng=aug, interpolation=s.resize_interpolation
        )

    @staticmethod
    def _collate(samples: List[dict]) -> dict:
        te = None
        if samples[0]["te"] is not None:
            te = {k: torch.stack([s["te"][k] for s in samples]) for k in samples[0]["te"]}
        return {
            "images": torch.stack([s["image"] for s in samples]) if samples[0]["image"] is not None else None,
            "latents": torch.stack([s["latents"] for s in samples]) if samples[0]["latents"] is not None else None,
            "captions": [s["caption"] for s in samples],
            "loss_weights": torch.tensor([s["weight"] for s in samples], dtype=torch.float32),
            "original_sizes_hw": torch.tensor([s["size_cond"][0] for s in samples], dtype=torch.long),
            "crop_top_lefts": torch.tensor([s["size_cond"][1] for s in samples], dtype=torch.long),
            "target_sizes_hw": torch.tensor([s["size_cond"][2] for s in samples], dtype=torch.long),
            "flipped": [s["flipped"] for s in samples],
            "is_reg": [s["rec"].is_reg for s in samples],
            "image_keys": [s["rec"].key for s in samples],
            "text_encoder_outputs": te,
            "masks": torch.stack([s["mask"] for s in samples]).unsqueeze(1).float() if "mask" in samples[0] else None,
        }

    # ---- info -------------------------------------------------------------------------------

    def records(self) -> List[ImageRecord]:
        """Every used record once (for caching)."""
        return [r for ds in self.datasets for r in ds.records if r.key not in self._excluded]

    def metadata(self) -> dict:
        """Inputs for kohya's ``ss_*`` metadata: counts, bucket info, tag frequency, dataset dirs."""
        meta = {"num_train_images": 0, "num_reg_images": 0, "num_batches_per_epoch": len(self), "datasets": []}
        for ds in self.datasets:
            meta["num_train_images"] += ds.num_train_images
            meta["num_reg_images"] += ds.num_reg_images
            meta["datasets"].append(ds.metadata())
        return meta


class EpochBatchSampler(torch.utils.data.Sampler):
    """Yields (epoch, batch index) keys of the dataset's current epoch, read when iteration starts.

    Carrying the epoch in the key keeps worker processes (which hold copies of the dataset) in step, so
    one DataLoader with persistent workers serves every epoch. With several processes, process ``rank``
    of ``world`` takes batches rank, rank+world, ... (wrapped so every process gets the same count, as
    accelerate's even_batches does); ``skip`` (set before an epoch) leaves out the first batches of this
    process's share, which is how a resumed run continues mid-epoch.
    It deliberately has no ``set_epoch``: accelerate would call it with 0-based epochs.
    """

    def __init__(self, dataset: TrainDataset, rank: int = 0, world: int = 1):
        self.dataset, self.rank, self.world, self.skip = dataset, rank, world, 0

    def _keys(self):
        n, epoch = len(self.dataset), self.dataset.epoch
        return [(epoch, (self.rank + k * self.world) % n) for k in range(-(-n // self.world))][self.skip:]

    def __iter__(self):
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


def _first(items):
    return items[0]


def make_dataloader(dataset: TrainDataset, num_workers: int = 0, persistent_workers: bool = False, pin_memory: bool = False,
                    rank: int = 0, world: int = 1):
    """A DataLoader yielding this process's batches in plan order (batch_size=1 of pre-made batches)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=1,
        sampler=EpochBatchSampler(dataset, rank, world),
        collate_fn=_first,
        num_workers=num_workers,
        persistent_workers=persistent_workers and num_workers > 0,
        pin_memory=pin_memory,
    )
