"""Inference side of lorasmith: text-to-image with LoRAs (tools/gen_img.py, docs/tools/gen_img.md).

Modules: lora_tags (A1111 ``<lora:name:weight>`` prompt tags and --lora_dir lookup),
generate (LoRA stack, job planning, the generation loop and PNG text chunks), prompts (kohya prompt
syntax, torch-free so prompt files are checked before a model loads).
"""
