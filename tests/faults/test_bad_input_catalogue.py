"""The bad-input catalogue (docs/troubleshooting.md): each mistake ends with a non-zero exit and a short
message naming the file or option and the fix — never a Python traceback unless --debug."""

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from library.train.entry import EXIT_USER, main
from networks.lora_file import save_lora_file
from tests.faults.harness import REPO, child_env, cli_args

SD1, SDXL = "train_network", "sdxl_train_network"


class Payload:
    """Unpickling this would create ``path`` (a stand-in for any code a .ckpt could run)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _image(path, size=(64, 64)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path)


def _folder(root, name="10_sks shape", n=2, caption="sks shape"):
    for i in range(n):
        _image(root / name / f"{i}.png")
        if caption is not None:
            (root / name / f"{i}.txt").write_text(caption)
    return root


def _lora_for(ckpt, path):
    """A LoRA file with the key layout of ``ckpt``'s family (random small weights)."""
    from library.models import load_base_model
    from networks.lora import create_network

    base = load_base_model(ckpt, dtype=torch.float32)
    tes = base.text_encoders if len(base.text_encoders) > 1 else base.text_encoders[0]
    net = create_network(1.0, 4, 4, base.vae, tes, base.unet)
    save_lora_file(net.state_dict(), str(path), {"ss_network_dim": "4"})
    return str(path)


@pytest.fixture(scope="module")
def ctx(tiny_ckpt, session_data, tmp_path_factory, other_run_state):
    tmp = tmp_path_factory.mktemp("catalogue")
    sdxl_lora = _lora_for(tiny_ckpt("sdxl"), tmp / "sdxl_lora.safetensors")
    return SimpleNamespace(tmp=tmp, sd1=tiny_ckpt("sd1"), sdxl=tiny_ckpt("sdxl"), data=session_data,
                           sdxl_lora=sdxl_lora, state=other_run_state)


@pytest.fixture(scope="module")
def other_run_state(tiny_ckpt, session_data, tmp_path_factory):
    """A finished run's state folder (network_dim 4), made in-process."""
    out = tmp_path_factory.mktemp("catalogue_state") / "out"
    argv = cli_args(tiny_ckpt("sd1"), session_data, out, max_train_steps=1, lr_warmup_steps=0, save_state=True)
    assert main(argv) == 0
    return out / "t-state"


def base(c, out=None, data=None, **extra):
    values = {"max_train_steps": 1, "lr_warmup_steps": 0, **extra}
    return cli_args(c.sd1, c.data if data is None else data, out or c.tmp / "out", **values)


def write(path, content):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def replace_opt(argv, name, value):
    i = argv.index(f"--{name}")
    return argv[:i + 1] + [value] + argv[i + 2:]


# ---------------------------------------------------------------------------------------------------
# Each case: (id, builder(c) -> (argv, script), words the message must contain). Words are regexes.
def _options():
    return [
        ("unknown option", lambda c: (base(c) + ["--learnig_rate", "1e-4"], SD1), ["--learnig_rate", "did you mean --learning_rate"]),
        ("wrong type", lambda c: (replace_opt(base(c), "learning_rate", "fast"), SD1), ["learning_rate", "must be a number", "fast"]),
        ("rank 0", lambda c: (replace_opt(base(c), "network_dim", "0"), SD1), ["network_dim must be at least 1, got 0"]),
        ("negative learning rate", lambda c: (replace_opt(base(c), "learning_rate", "-1"), SD1), ["learning_rate must be at least 0, got -1"]),
        ("resolution not a multiple of bucket_reso_steps",
         lambda c: (replace_opt(base(c), "resolution", "520") + ["--enable_bucket"], SD1),
         ["resolution 520", "bucket_reso_steps 64", "512"]),
        ("unknown optimizer", lambda c: (replace_opt(base(c), "optimizer_type", "AdamWW"), SD1), ["optimizer_type", "AdamWW is not a known optimizer", "Did you mean AdamW"]),
        ("unknown lr scheduler", lambda c: (replace_opt(base(c), "lr_scheduler", "cosin"), SD1), ["lr_scheduler 'cosin'", "not a known schedule", "did you mean 'cosine'"]),
        ("unknown network_args key", lambda c: (base(c, network_args=["conv_dmi=4"]), SD1), ["network_args has unknown key 'conv_dmi'", "did you mean 'conv_dim'"]),
        ("network module that does not exist", lambda c: (base(c, network_module="networks.nope"), SD1),
         ["network_module networks.nope", "no such module", "networks.lora"]),
        ("output_name with a folder (path traversal)", lambda c: (replace_opt(base(c), "output_name", "../x"), SD1),
         ["output_name", r"\.\./x", "path separator", "output_dir"]),
        ("output folder is a file", lambda c: (base(c, out=write(c.tmp / "afile", "x")), SD1), ["output_dir", "afile is a file", "give a folder"]),
        ("output folder not writable (under a file)",
         lambda c: (base(c, out=Path(write(c.tmp / "bfile", "x")) / "sub"), SD1), ["output_dir", "cannot be created", "bfile is a file"]),
        ("xformers without a GPU", lambda c: (base(c, xformers=True), SD1), ["xformers", "CUDA"]),
        ("SD1 model given to sdxl_train_network.py", lambda c: (base(c), SDXL), ["not SDXL", "train_network.py"]),
        ("SDXL model given to train_network.py",
         lambda c: (replace_opt(base(c), "pretrained_model_name_or_path", c.sdxl), SD1), ["SDXL", "sdxl_train_network.py"]),
        ("--resume from another run's state", lambda c: (replace_opt(base(c), "network_dim", "8") + ["--resume", str(c.state)], SD1),
         ["--resume", "network_dim: state 4 vs now 8", "cannot change within a run"]),
        ("--resume folder that does not exist", lambda c: (base(c) + ["--resume", str(c.tmp / "nostate")], SD1), ["resume", "nostate", "not found"]),
        ("--resume folder without a state", lambda c: (base(c) + ["--resume", str(c.data)], SD1),
         ["--resume", "no complete training state", "--save_state"]),
    ]


def _config_files():
    def config(c, name, text, **extra):
        return base(c, **extra) + ["--config_file", write(c.tmp / name, text)]

    return [
        ("typo'd key in --config_file", lambda c: (config(c, "typo.toml", "[training_arguments]\nlearning_rat = 1e-4\n"), SD1),
         ["learning_rat", "typo.toml", "did you mean 'learning_rate'"]),
        ("wrong type in --config_file", lambda c: (config(c, "type.toml", "[training_arguments]\nmax_train_epochs = \"ten\"\n"), SD1),
         ["max_train_epochs in .*type.toml", "must be an integer", "ten"]),
        ("--config_file is not TOML", lambda c: (config(c, "syntax.toml", "caption_extension = .txt\n"), SD1),
         ["syntax.toml", "not valid TOML"]),
        ("--config_file not found", lambda c: (base(c) + ["--config_file", str(c.tmp / "missing.toml")], SD1), ["missing.toml", "not found"]),
        ("dataset config given as --config_file",
         lambda c: (config(c, "ds.toml", "[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = 'x'\n"), SD1),
         ["ds.toml", "--dataset_config"]),
        ("unknown key in --dataset_config",
         lambda c: (base(c, dataset_config=write(c.tmp / "dsk.toml", "[[datasets]]\nresolutin = 64\n"
                                                  f"[[datasets.subsets]]\nimage_dir = '{c.data / 'img' / '10_sks shape'}'\n")), SD1),
         ["dsk.toml", "unknown key .resolutin.", "did you mean \"resolution\""]),
    ]


def _datasets():
    return [
        ("train_data_dir does not exist", lambda c: (base(c, data=c.tmp / "nodata"), SD1), ["train_data_dir", "nodata", "not found"]),
        ("empty train_data_dir", lambda c: (base(c, data=_empty(c.tmp / "empty")), SD1), ["empty/img", "no images", "10_name"]),
        ("images only in the root folder", lambda c: (base(c, data=_root_only(c.tmp / "rootonly")), SD1),
         ["rootonly", r"NN_|10_"]),
        ("missing caption and no class tokens", lambda c: (base(c, data=_folder(c.tmp / "nocls" / "img", name="10", caption=None).parent), SD1),
         ["caption", "class tokens", "10"]),
        ("caption file not UTF-8", lambda c: (base(c, data=_latin1(c.tmp / "latin1")), SD1), ["0.txt", "is not UTF-8", "re-save it as UTF-8"]),
        ("unreadable image with --stop_on_bad_image",
         lambda c: (base(c, data=_bad_image(c.tmp / "badimg"), stop_on_bad_image=True), SD1), ["1.png", "damaged or not an image", "stop_on_bad_image"]),
    ]


def _empty(root):
    (root / "img").mkdir(parents=True, exist_ok=True)
    return root


def _root_only(root):
    for i in range(2):
        _image(root / "img" / f"{i}.png")
    return root


def _latin1(root):
    _folder(root / "img", n=1)
    (root / "img" / "10_sks shape" / "0.txt").write_bytes("caf\xe9 shape".encode("latin-1"))
    return root


def _bad_image(root):
    _folder(root / "img", n=2)
    (root / "img" / "10_sks shape" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 10)
    return root


def _models_and_loras():
    def model(c, path):
        return replace_opt(base(c), "pretrained_model_name_or_path", str(path))

    def truncated(c, name):
        data = Path(c.sd1).read_bytes()
        return write(c.tmp / name, data[: len(data) // 3])

    return [
        ("model file not found", lambda c: (model(c, c.tmp / "nomodel.safetensors"), SD1), ["nomodel.safetensors", "not found"]),
        ("truncated safetensors as the model", lambda c: (model(c, truncated(c, "half.safetensors")), SD1),
         ["half.safetensors", "damaged|incomplete|truncated"]),
        ("empty model file", lambda c: (model(c, write(c.tmp / "empty.safetensors", b"")), SD1), ["empty.safetensors", "damaged or incomplete", "shorter than a safetensors header"]),
        ("a LoRA given as the model", lambda c: (model(c, c.sdxl_lora), SD1), ["sdxl_lora.safetensors", "not a base model checkpoint", "--network_weights"]),
        ("pickle with code in a .ckpt model", lambda c: (model(c, _payload(c.tmp / "evil.ckpt", c.tmp / "PWNED")), SD1),
         ["evil.ckpt", "refused", "references code", "safetensors"]),
        ("pickle with code in a legacy-format .ckpt",
         lambda c: (model(c, _payload(c.tmp / "old.ckpt", c.tmp / "PWNED", legacy=True)), SD1), ["old.ckpt", "refused", "references code", "safetensors"]),
        ("raw pickle as the model", lambda c: (model(c, _raw_pickle(c.tmp / "raw.pt", c.tmp / "PWNED")), SD1), ["raw.pt", "damaged or not a PyTorch file"]),
        ("text file named .ckpt", lambda c: (model(c, write(c.tmp / "text.ckpt", "hello")), SD1), ["text.ckpt", "damaged or not a PyTorch file"]),
        ("SDXL LoRA on SD1.5 via --network_weights", lambda c: (base(c, network_weights=c.sdxl_lora), SD1),
         ["--network_weights .*sdxl_lora.safetensors", "none of its modules exist", "LoRA for SDXL"]),
        ("truncated LoRA as --network_weights",
         lambda c: (base(c, network_weights=write(c.tmp / "halflora.safetensors", Path(c.sdxl_lora).read_bytes()[:500])), SD1),
         ["halflora.safetensors", "not a readable safetensors file", "truncated"]),
        ("pickle LoRA as --network_weights", lambda c: (base(c, network_weights=_payload(c.tmp / "lora.pt", c.tmp / "PWNED2")), SD1),
         ["lora.pt", "only .safetensors LoRA files", "convert_lora"]),
        ("--vae that is not a VAE", lambda c: (base(c, vae=c.sdxl_lora), SD1), ["--vae .*sdxl_lora.safetensors", "not a VAE", "weights missing"]),
        ("sample prompt with an unknown option",
         lambda c: (base(c, sample_prompts=write(c.tmp / "prompts.txt", "a cat --w 64 --zz 3\n"), sample_at_first=True), SD1),
         ["prompts.txt:1", "unknown option '--zz'", "known: --n"]),
        ("sample prompts file not found", lambda c: (base(c, sample_prompts=str(c.tmp / "noprompts.txt")), SD1),
         ["sample_prompts .*noprompts.txt not found"]),
    ]


def _payload(path, marker, legacy=False):
    """A checkpoint the way torch.save writes one, whose unpickling would run code."""
    torch.save({"state_dict": {"w": Payload(str(marker))}}, path, _use_new_zipfile_serialization=not legacy)
    return str(path)


def _raw_pickle(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": Payload(str(marker))}}, f)
    return str(path)


def _bad_state(c, name, train_state):
    """A copy of a finished run's state whose train_state.json holds ``train_state`` (any JSON)."""
    import shutil

    dst = c.tmp / name / "t-state"
    if not dst.exists():
        shutil.copytree(c.state, dst)
        (dst / "train_state.json").write_text(json.dumps(train_state))
    return str(dst)


def _held_lock(c):
    """Another run holding output_dir/t (kept for the module's life, as a running trainer would)."""
    from library.train.ownership import RunLock

    out = c.tmp / "locked_out"
    if not hasattr(c, "lock"):
        c.lock = RunLock(str(out), "t").acquire()
    return out


def _ownership():
    good = {"global_step": 1, "epoch": 1, "position": 1}
    return [
        ("hidden output_name", lambda c: (replace_opt(base(c), "output_name", ".hidden"), SD1), ["output_name", "dot", "hidden"]),
        ("output_name '..'", lambda c: (replace_opt(base(c), "output_name", ".."), SD1), ["output_name", "parent folder"]),
        ("output_name with a control character", lambda c: (replace_opt(base(c), "output_name", "a\x07b"), SD1),
         ["output_name", "control character"]),
        ("output_name a Windows device name", lambda c: (replace_opt(base(c), "output_name", "con"), SD1),
         ["output_name", "reserved device name"]),
        ("output_name with a colon", lambda c: (replace_opt(base(c), "output_name", "a:b"), SD1), ["output_name", "Windows"]),
        ("output_name too long for the file system", lambda c: (replace_opt(base(c), "output_name", "x" * 240), SD1),
         ["output_name", "too long", "allows 255"]),
        ("output_dir/output_name in use by another run", lambda c: (base(c, out=_held_lock(c)), SD1),
         ["in use by another training run", "pid", "started", "output_name"]),
        ("train_state.json is a list", lambda c: (base(c) + ["--resume", _bad_state(c, "st_list", [1, 2])], SD1),
         ["--resume", "train_state.json", "list"]),
        ("train_state.json with a string step", lambda c: (base(c) + ["--resume", _bad_state(c, "st_str", {**good, "global_step": "1"})], SD1),
         ["--resume", "train_state.json", "'global_step' is str"]),
        ("train_state.json with a list for the settings",
         lambda c: (base(c) + ["--resume", _bad_state(c, "st_fp", {**good, "fingerprint": [1]})], SD1),
         ["--resume", "'fingerprint' is list"]),
        ("train_state.json with a bad checkpoint list",
         lambda c: (base(c) + ["--resume", _bad_state(c, "st_ck", {**good, "checkpoints": ["x"]})], SD1),
         ["--resume", "'checkpoints'"]),
        ("--resume with changed settings", lambda c: (replace_opt(base(c), "learning_rate", "1e-4") + ["--resume", str(c.state)], SD1),
         ["--resume", "learning_rate: state 0.001 vs now 0.0001", "--resume_with_changes learning_rate"]),
        ("--resume_with_changes with an unknown key", lambda c: (base(c) + ["--resume_with_changes", "resolutoin"], SD1),
         ["resume_with_changes", "resolutoin", "did you mean 'resolution'"]),
    ]


CASES = _options() + _config_files() + _datasets() + _models_and_loras() + _ownership()


# ---------------------------------------------------------------------------------------------------
# Values checked before work starts (issue 10 section 3). Each case writes into its own output folder,
# which must stay empty: the refusal comes before any LoRA, state, sample or cache file.
def _own(c, case_id, data=None, **extra):
    out = c.tmp / ("values_" + re.sub(r"\W+", "_", case_id))
    return base(c, out=out, data=data, **extra)


def _ds(c, name, text):
    """A dataset_config whose subset is the demo folder (``{img}``) plus ``text``."""
    return write(c.tmp / name, text.replace("{img}", str(c.data / "img" / "10_sks shape")))


def _caption_data(c, name, caption: bytes):
    root = c.tmp / name
    _folder(root / "img", n=2)
    (root / "img" / "10_sks shape" / "0.txt").write_bytes(caption)
    return root


def _jsonl_data(c, name, file_name):
    root = c.tmp / name
    _image(root / "img" / "a.png")
    _image(c.tmp / f"{name}_outside.png")
    write(root / "img" / "metadata.jsonl", json.dumps({"file_name": file_name, "text": "x"}) + "\n")
    return root


def _in_json(c, name, key, value=None):
    root = c.tmp / name
    _image(root / "img" / "a.png")
    _image(c.tmp / f"{name}_outside.png")
    meta = write(c.tmp / f"{name}.json", json.dumps({key: value if value is not None else {"caption": "x"}}))
    return root, meta


def _strip_image(c, name):
    root = c.tmp / name
    _folder(root / "img", n=1)
    _image(root / "img" / "10_sks shape" / "strip.png", size=(6500, 1))
    return root


def _values():
    V = []

    def case(case_id, build, words):
        V.append((case_id, build, words))

    for option, value in (("unet_lr", "nan"), ("max_grad_norm", "nan"), ("network_alpha", "nan"),
                          ("text_encoder_lr", "inf"), ("learning_rate", "1e999"), ("lr_warmup_steps", "nan")):
        case(f"--{option} {value}", lambda c, o=option, v=value, i=f"{option} {value}": (_own(c, i, **{o: v}), SD1),
             [f"--{option}", "finite number", re.escape(value)])
    for option, entry in (("network_args", "loraplus_lr_ratio=nan"), ("network_args", "conv_alpha=inf"),
                          ("optimizer_args", "betas=0.9,nan"), ("lr_scheduler_args", "T_max=inf")):
        case(f"{option} {entry}", lambda c, o=option, e=entry: (_own(c, e, **{o: [e]}), SD1),
             [option, re.escape(entry), "finite number"])
    case("nan in --config_file", lambda c: (_own(c, "cfgnan") + ["--config_file", write(c.tmp / "nan.toml", "unet_lr = nan\n")], SD1),
         ["unet_lr", "nan.toml", "finite number"])
    case("[[section]] in --config_file",
         lambda c: (_own(c, "cfgaot") + ["--config_file", write(c.tmp / "aot.toml", "[[training_arguments]]\nseed = 1\n")], SD1),
         ["aot.toml", r"\[training_arguments\]"])
    case("min_timestep equal to max_timestep", lambda c: (_own(c, "ts", min_timestep=500, max_timestep=500), SD1),
         ["min_timestep 500 must be below max_timestep 500"])
    case("adaptive_noise_scale with noise_offset 0",
         lambda c: (replace_opt(_own(c, "ans", adaptive_noise_scale=0.01), "noise_offset", "0"), SD1),
         ["adaptive_noise_scale", "noise_offset above 0"])
    case("zero_terminal_snr with debiased_estimation_loss",
         lambda c: (_own(c, "ztsnr", zero_terminal_snr=True, debiased_estimation_loss=True), SD1),
         ["debiased_estimation_loss", "zero_terminal_snr", "infinity"])
    case("dataset_config resolution \"64,\"",
         lambda c: (_own(c, "dsres", dataset_config=_ds(c, "res.toml", '[[datasets]]\nresolution = "64,"\n'
                                                          '[[datasets.subsets]]\nimage_dir = \'{img}\'\n')), SD1),
         ["res.toml", "resolution", "64,"])
    case("dataset_config num_repeats 10**12",
         lambda c: (_own(c, "dsrep", dataset_config=_ds(c, "rep.toml", "[[datasets]]\nresolution = 64\n[[datasets.subsets]]\n"
                                                          "image_dir = '{img}'\nnum_repeats = 1000000000000\n")), SD1),
         ["rep.toml", "num_repeats", "100000"])
    case("dataset_config prior_loss_weight nan",
         lambda c: (_own(c, "dsnan", dataset_config=_ds(c, "dsnan.toml", "[[datasets]]\nresolution = 64\nprior_loss_weight = nan\n"
                                                          "[[datasets.subsets]]\nimage_dir = '{img}'\n")), SD1),
         ["dsnan.toml", "prior_loss_weight", "finite number"])
    case("dataset_config [general] as a list",
         lambda c: (_own(c, "dsgen", dataset_config=_ds(c, "gen.toml", "[[general]]\nresolution = 64\n[[datasets]]\n"
                                                          "[[datasets.subsets]]\nimage_dir = '{img}'\n")), SD1),
         ["gen.toml", r"\[general\] must be a table"])
    case("folder with 10**12 repeats",
         lambda c: (_own(c, "folderrep", data=_folder(c.tmp / "manyrep" / "img", name="1000000000000_sks").parent), SD1),
         ["1000000000000_sks", "repeats", "100000"])
    case("network_dim larger than a layer", lambda c: (replace_opt(_own(c, "bigdim"), "network_dim", "4096"), SD1),
         ["rank 4096 is larger than layer", "lora_", "network_dim"])
    case("sample prompt --w 100000",
         lambda c: (_own(c, "pw", sample_prompts=write(c.tmp / "pw.txt", "a cat --w 100000\n"), sample_at_first=True), SD1),
         ["pw.txt:1", "--w", "4096"])
    case("sample prompt --s 10**9",
         lambda c: (_own(c, "ps", sample_prompts=write(c.tmp / "ps.txt", "a cat --s 1000000000\n"), sample_every_n_steps=1), SD1),
         ["ps.txt:1", "--s", "1000"])
    case("caption in UTF-16 without a BOM",
         lambda c: (_own(c, "u16", data=_caption_data(c, "u16", "sks shape".encode("utf-16-le"))), SD1),
         ["0.txt", "NUL", "UTF-16"])
    case("caption with a control character",
         lambda c: (_own(c, "ctl", data=_caption_data(c, "ctl", b"sks\x07shape")), SD1), ["0.txt", "control character"])
    case("caption file of 2 MiB", lambda c: (_own(c, "bigcap", data=_caption_data(c, "bigcap", b"a" * (2 << 20))), SD1),
         ["0.txt", "bytes", "right file"])
    case("metadata.jsonl path with ../",
         lambda c: (_own(c, "jsonl", data=_jsonl_data(c, "jsonl", "../../jsonl_outside.png")), SD1),
         ["metadata.jsonl line 1", "outside the dataset folder", "--allow_paths_outside_dataset"])
    case("in_json absolute path outside the dataset",
         lambda c: (_own(c, "injson", data=_in_json(c, "injson", str(c.tmp / "injson_outside.png"))[0],
                         in_json=_in_json(c, "injson", str(c.tmp / "injson_outside.png"))[1]), SD1),
         ["injson.json", "outside the dataset folder", "--allow_paths_outside_dataset"])
    case("in_json caption that is not text",
         lambda c: (_own(c, "injsontype", data=_in_json(c, "injt", "a", {"caption": ["x"]})[0],
                         in_json=_in_json(c, "injt", "a", {"caption": ["x"]})[1]), SD1),
         ["injt.json", "caption", "must be a string"])
    case("65000x1 image with --stop_on_bad_image",
         lambda c: (_own(c, "strip", data=_strip_image(c, "strip"), stop_on_bad_image=True), SD1),
         ["strip.png", "6500x1", "aspect ratio"])
    return V


VALUE_CASES = _values()


def check_message(err: str, words) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    assert len(lines[0]) < 600, lines[0]  # a few lines' worth, on one line
    for word in words:
        assert re.search(word, lines[0]), f"{word!r} not in: {lines[0]}"
    return lines[0]


def says_why(words, argv) -> None:
    """A case must expect the reason or the fix, not only its own input echoed back: a message that
    merely repeats the option and value given ("learning_rate -1") would pass an echo-only case."""
    given = "\n".join(str(a) for a in argv)
    assert any(not re.search(word, given) for word in words), f"every expected word {words} is part of the command line"


def test_the_catalogue_has_at_least_30_distinct_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)
    assert len(VALUE_CASES) >= 30 and len({c[0] for c in CASES + VALUE_CASES}) == len(CASES) + len(VALUE_CASES)


@pytest.mark.parametrize("case", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_bad_value_is_refused_before_any_file_is_written(case, ctx, capsys):
    case_id, build, words = case
    argv, script = build(ctx)
    out = Path(argv[argv.index("--output_dir") + 1])
    code = main(argv, script)
    err = capsys.readouterr().err
    assert code == EXIT_USER, err[-3000:]
    check_message(err, words)
    says_why(words, argv)
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_ends_with_a_short_message_and_exit_2(case, ctx, capsys):
    _, build, words = case
    argv, script = build(ctx)
    code = main(argv, script)
    err = capsys.readouterr().err
    assert code == EXIT_USER, err[-3000:]
    check_message(err, words)
    says_why(words, argv)
    assert not (ctx.tmp / "PWNED").exists() and not (ctx.tmp / "PWNED2").exists()  # no pickled code ran


def test_missing_optional_package_names_the_pip_command(ctx, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "prodigyopt", None)  # import prodigyopt -> ImportError
    code = main(replace_opt(base(ctx), "optimizer_type", "Prodigy") + ["--learning_rate", "1.0"])
    assert code == EXIT_USER
    check_message(capsys.readouterr().err, ["Prodigy|prodigy", "pip install prodigyopt"])


def test_output_folder_without_write_permission(ctx, capsys, monkeypatch):
    locked = ctx.tmp / "locked"
    locked.mkdir(exist_ok=True)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(locked) else real_access(p, mode, **kw))
    assert main(base(ctx, out=locked / "out")) == EXIT_USER  # (a chmod is no test when the suite runs as root)
    check_message(capsys.readouterr().err, ["output_dir", "locked", "not writable", "permissions"])


def test_debug_shows_the_traceback(ctx):
    with pytest.raises(Exception) as raised:
        main(replace_opt(base(ctx), "pretrained_model_name_or_path", str(ctx.tmp / "nomodel.safetensors")) + ["--debug"])
    assert "nomodel.safetensors" in str(raised.value)


def test_real_subprocesses_print_no_traceback(ctx, tmp_path):
    """Through ``python train_network.py``: the message and exit code reach the shell, nothing else."""
    cases = [
        (replace_opt(base(ctx), "pretrained_model_name_or_path", _payload(tmp_path / "evil.ckpt", tmp_path / "PWNED")),
         ["evil.ckpt", "refused"]),
        (base(ctx) + ["--config_file", write(tmp_path / "typo.toml", "learning_rat = 1\n")], ["learning_rat", "typo.toml"]),
    ]
    for argv, words in cases:
        proc = subprocess.run([sys.executable, str(REPO / "train_network.py"), *argv], cwd=REPO, env=child_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == EXIT_USER, proc.stderr[-3000:]
        check_message(proc.stderr, words)
        assert proc.stdout.strip() == ""
    assert not (tmp_path / "PWNED").exists()
