"""Datasets layer: from the user's folders to bucketed training batches (docs/datasets.md).

Modules (import them directly; this package imports nothing so the preflight stays torch-free):
params (option dataclasses), dataset_config (TOML and command-line layouts), folders / layouts /
hf_datasets (reading each layout), captions, image_size, buckets, prepare (scan, reg balance, buckets),
images (decode, resize, augment), cache / text_cache (keyed latent and text-encoder caches),
dataset (torch Dataset and DataLoader), preflight (the dataset report), errors (DatasetError).
"""
