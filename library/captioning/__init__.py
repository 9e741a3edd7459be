"""Caption images with a BLIP or BLIP-2 model from a local folder (transformers), for tools/caption.py.

One job per module, each tested alone (the folder scan, the "which images still need a caption" rule,
the model checks and the atomic caption write are each small and easy to get wrong):

- ``images``: the images of a folder to caption, read ahead of the model in order;
- ``caption_files``: caption file names, the "already captioned" rule, the atomic write;
- ``model_folder``: which local transformers folder is a captioning model, checked before loading;
- ``captioner``: the loaded model, its decoding settings, device and precision;
- ``folder``: the tool's run over a folder: plan, load, caption in batches, count.

Importing the package loads neither torch nor transformers: the tool's ``--help`` and option checks stay fast.
"""
