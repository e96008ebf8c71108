"""Careless and hostile input on the command line: each is a one-line error with exit code 2,
said before any model loads where the input allows it; inputs are never replaced; a series
folder written twice holds only the new series; a failed run leaves no empty folder; stale
checkpoint temp folders go at the next save."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from PIL import Image

from serialgen.cli import main as cli
from serialgen.data.memory import WorldArrays

from .tiny import saved_adapter


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.png"
    Image.fromarray(WorldArrays.load(dataset, "validation", limit=1, progress=False).images["image"][0]).save(path)
    return path


def _models(folders) -> list[str]:
    return ["--standardizer", str(folders / "stage1"), "--base", str(folders / "sd15"), "--image-encoder",
            str(folders / "image_encoder"), "--adapter", str(saved_adapter(folders))]


def _error(capsys) -> str:
    """The one error line on stderr (model loading may print progress bars before it)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_standardize_never_replaces_its_input_nor_writes_over_a_folder(reference, tmp_path, capsys):
    before = reference.read_bytes()
    assert cli(["standardize", str(reference), "--out", str(reference)]) == 2
    assert "the input image" in _error(capsys) and reference.read_bytes() == before
    folder = tmp_path / "looks-like-an-image.png"
    folder.mkdir()
    assert cli(["standardize", str(reference), "--out", str(folder)]) == 2
    assert "is a directory" in _error(capsys)


def test_generate_never_replaces_its_reference(reference, tmp_path, capsys):
    out = tmp_path / "series"
    out.mkdir()
    inside = out / "01.png"
    inside.write_bytes(reference.read_bytes())
    assert cli(["generate", "--reference", str(inside), "--prompt", "a character", "--out", str(out)]) == 2
    assert "would be overwritten" in _error(capsys) and inside.read_bytes() == reference.read_bytes()


def test_a_series_folder_written_twice_holds_only_the_new_series(reference, folders, tmp_path, capsys):
    out = tmp_path / "series"
    base = ["generate", "--reference", str(reference), "--out", str(out), "--steps", "2", "--no-pose", *_models(folders)]
    assert cli(base + ["--prompt", "a character, waving", "--prompt", "a character, sitting",
                       "--prompt", "a character, running"]) == 0
    (out / "notes.txt").write_text("mine")  # a file the series did not write stays
    assert cli(base + ["--prompt", "a character, waving"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["01.png", "notes.txt", "series.json", "sheet.png",
                                                    "standardized.png"]
    assert json.loads((out / "series.json").read_text())["files"] == ["01.png"]


def test_a_failed_generate_leaves_no_empty_folder(reference, tmp_path, capsys):
    out = tmp_path / "new"
    code = cli(["generate", "--reference", str(reference), "--prompt", "x", "--out", str(out), "--adapter",
                str(tmp_path / "no-adapter")])
    assert code == 2 and "No image adapter" in _error(capsys) and not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--seed", str(2**40)], "a seed must be"),
    (["--seed", "-1"], "a seed must be"),
    (["--steps", "100000"], "DDIM steps must be"),
    (["--steps", "0"], "DDIM steps must be"),
    (["--guidance", "nan"], "finite number"),
])
def test_numbers_out_of_range_are_refused_by_the_parser(reference, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        cli(["generate", "--reference", str(reference), "--prompt", "x", "--out", str(tmp_path / "o"), *args])
    assert exit_.value.code == 2 and message in _error(capsys)


def test_sheet_tiles_are_bounded(dataset, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli(["sheet", str(dataset), "--out", str(tmp_path / "s.png"), "--tile-height", "100000"])
    assert exit_.value.code == 2 and "tile height must be 16-1024" in _error(capsys)


def test_a_latin1_prompts_file_is_named_and_explained(reference, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("a character in a café\n".encode("latin-1"))
    assert cli(["generate", "--reference", str(reference), "--prompts-file", str(prompts), "--out",
                str(tmp_path / "o")]) == 2
    err = _error(capsys)
    assert str(prompts) in err and "UTF-8" in err


@pytest.mark.parametrize("size, mode", [((9000, 9000), "1"), ((20000, 20000), "1")])
def test_decompression_bombs_are_refused(tmp_path, capsys, size, mode):
    bomb = tmp_path / "bomb.png"
    Image.new(mode, size).save(bomb)  # a few kB on disk, hundreds of megapixels decoded
    assert bomb.stat().st_size < 2**20
    assert cli(["standardize", str(bomb), "--out", str(tmp_path / "s.png")]) == 2
    assert "megapixels" in _error(capsys)


def test_a_truncated_weights_file_is_a_one_line_error(reference, folders, tmp_path, capsys):
    broken = tmp_path / "adapter" / "ip-adapter.safetensors"
    broken.parent.mkdir()
    data = saved_adapter(folders).read_bytes()
    broken.write_bytes(data[:len(data) // 2])
    models = _models(folders)
    models[models.index("--adapter") + 1] = str(broken)
    assert cli(["generate", "--reference", str(reference), "--prompt", "x", "--out", str(tmp_path / "o"),
                "--steps", "1", *models]) == 2
    assert "truncated or corrupt" in _error(capsys)


def test_serve_on_a_busy_port_says_so_before_loading_models(tmp_path, capsys):
    pytest.importorskip("gradio")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert cli(["serve", "--port", str(port), "--adapter", str(tmp_path / "never-loaded")]) == 2
    assert f"cannot serve on 127.0.0.1:{port}" in _error(capsys)


def test_stale_checkpoint_temp_folders_go_at_the_next_save(tmp_path):
    from serialgen.train.checkpoint import save_checkpoint

    stale = tmp_path / "checkpoint.tmp-99999"  # a save killed halfway, by another process
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path, step=1, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
