"""Merging: LoRAs into one LoRA or into a checkpoint, and checkpoints into each other.

Modules: lora_merge (tools/merge_lora.py: exact rank concatenation, SVD to a new rank,
merge into a base model), model_merge (tools/merge_models.py: weighted sum and add
difference, streamed key by key), stream_write (a safetensors writer that holds one
tensor at a time). Docs: docs/tools/merge_lora.md, docs/tools/merge_models.md.
"""
