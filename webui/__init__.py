"""The web GUI (``python gui.py``): a FastAPI app over the option schema, the run folder and a job queue.

Modules: ``paths`` (every path a request names stays inside the roots), ``jobs`` (SQLite queue +
process runner that survives a GUI restart), ``forms`` (the option schema as JSON, validation with
library.options), ``runs`` (reading a run folder: status, metrics with downsampling, samples, log),
``datasets`` (preflight, captions), ``lora_settings`` (a run's options from a LoRA's ss_* metadata),
``app`` (the routes), ``security`` (token and CSRF checks). Docs: docs/gui.md.
"""
