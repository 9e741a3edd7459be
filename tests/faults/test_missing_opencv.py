"""A Python without OpenCV (a ComfyUI whose packs brought none, or one where pip removed a clashing flavour)
stops before the dataset scan and the model load, with the fix in the message, and writes nothing."""

import importlib.util

from library.train.entry import EXIT_USER, main
from tests.faults.harness import cli_args


def test_training_without_opencv_stops_before_any_work(tiny_ckpt, session_data, tmp_path, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "cv2" else real_find_spec(name, *a, **k))
    out = tmp_path / "out"
    assert main(cli_args(tiny_ckpt("sd1"), session_data, out, max_train_steps=1)) == EXIT_USER
    err = capsys.readouterr().err
    assert "OpenCV (the cv2 module) is not installed" in err and "pip install opencv-python-headless" in err
    assert "install.py" in err and "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*.safetensors"))
