import pytest


@pytest.fixture
def paths(tmp_path):
    """A dummy model file and data folder, as command-line words and as values."""
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"")
    data = tmp_path / "data"
    data.mkdir()
    argv = ["--pretrained_model_name_or_path", str(model), "--train_data_dir", str(data)]
    values = {"pretrained_model_name_or_path": str(model), "train_data_dir": str(data)}
    return argv, values


@pytest.fixture
def write_toml(tmp_path):
    def write(text, name="config.toml"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write
