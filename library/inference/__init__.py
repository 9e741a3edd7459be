"""Inference side of lorasmith: text-to-image with LoRAs (tools/gen_img.py, docs/tools/gen_img.md), and
the pieces sample images during training use (library/train/sampling.py imports them; this package
never imports training).

Modules: lora_tags (A1111 ``<lora:name:weight>`` prompt tags and --lora_dir lookup),
generate (LoRA stack, job planning, the generation loop), pipelines (samplers, diffusers pipelines,
a prompt's text arguments), text_encoding (captions and prompts -> UNet conditioning, as in training),
prompt_weights (``(word:1.2)`` syntax), png_info (the PNG ``parameters`` text), prompts (kohya prompt
syntax, torch-free so prompt files are checked before a model loads), class_images (prior-preservation sets).
"""
