"""`zoo export` and `zoo.export`: ONNX and ExportedProgram files checked against eager PyTorch on the repository's
example images, the detector's post-processing named, refusals in one line, nothing half-written.

resnet18-cifar and fastestdet-coco ship their weights; resnet20-cifar's come from ../shared's offline mirror of
the akamaster weights (skipped with the reason without it). An export and its check take 5-25 s on the project's
2-core machine while it trains, so only resnet20-cifar's (the smallest) are in the fast set; the others are slow.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from click.testing import CliRunner

import zoo
from tests.conftest import REPO, require_shared
from zoo.cli import cli
from zoo.errors import ZooError

IMAGES = REPO / "examples" / "images"


def run(*args: str):  # noqa: ANN201
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(autouse=True)
def one_thread():
    """Two threads on a shared 2-core machine spin against each other's load (as tests/test_fastestdet.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def mirror(monkeypatch):
    path = require_shared("weights", "akamaster-resnet-cifar")
    monkeypatch.setenv("ZOO_MIRROR", str(path))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    return path


def eager_inputs(name: str) -> torch.Tensor:
    """The example images as the card says, through the task's own code (what the export is checked on)."""
    from zoo.runtime.images import read_image
    from zoo.runtime.tasks import get_task

    task = get_task(zoo.card(name))
    files = sorted(IMAGES.glob("*.png"))
    return task.prepare(task.predict_batch([read_image(f) for f in files], [str(f) for f in files]).images).float()


# -- refusals: one line, exit 1, nothing written ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("resnet18-cifar", "--format", "tflite"),
            "Error: Unknown export format 'tflite'; use onnx or exported-program.",
        ),
        (
            ("resnet18-cifar", "--format", "onx"),
            "Error: Unknown export format 'onx' (did you mean 'onnx'?); use onnx or exported-program.",
        ),
        (
            ("cgan-cifar",),
            "Error: Model 'cgan-cifar' is a gan: 'zoo export' does not apply to it (it supports 'zoo eval', "
            "'zoo finetune', 'zoo sample').",
        ),
        (("resnet18-cifar", "--opset", "99"), "Error: --opset 99: the installed onnx"),
        (
            ("resnet18-cifar", "--format", "exported-program", "--opset", "18"),
            "Error: --opset applies to ONNX only, not to exported-program.",
        ),
        (
            ("resnet18-cifar", "--images", "no-such-folder"),
            "Error: Cannot check the export on no-such-folder: no such file",
        ),
        (("no-such-model",), "Error: Unknown model 'no-such-model'."),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    result = run("export", *args, "-o", str(tmp_path / "out.onnx"))
    assert result.exit_code == 1, result.output
    assert result.output.startswith(message) and result.output.count("\n") == 1, result.output
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_and_folder_as_file(tmp_path):
    result = run("export", "resnet18-cifar", "-o", str(tmp_path / "nope" / "r18.onnx"))
    assert (result.exit_code, result.output) == (
        1,
        f"Error: Cannot write {tmp_path / 'nope' / 'r18.onnx'}: its folder {tmp_path / 'nope'} does not exist.\n",
    )
    result = run("export", "resnet18-cifar", "-o", str(tmp_path))
    assert (result.exit_code, result.output) == (
        1,
        f"Error: Cannot write {tmp_path}: it is a folder; -o names the file to write.\n",
    )


def test_missing_onnx_packages_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    result = run("export", "resnet18-cifar", "-o", str(tmp_path / "r18.onnx"))
    assert result.exit_code == 1
    assert result.output == (
        "Error: ONNX export needs the packages onnx and onnxscript (torch's exporter) and "
        "onnxruntime (the check); missing: onnxscript. Install them: pip install onnxscript\n"
    )


def test_torchvision_detectors_are_refused_by_their_task():
    from zoo.runtime.tasks import get_task

    task = get_task(zoo.card("ssdlite320-mobilenetv3-coco"))
    with pytest.raises(ZooError, match="returns finished detections .* raw-head detectors \\(FastestDet\\) only"):
        task.export_module(torch.nn.Identity())


# -- exports, checked ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_classifier_exported_program_matches_eager(tmp_path):
    """resnet18-cifar (shipped weights): the file loads with torch.export.load, gives the eager logits on both
    example images and still calls the cat a cat; the record says how it was checked."""
    out = tmp_path / "r18.pt2"
    result = run("export", "resnet18-cifar", "-o", str(out), "--json")  # format from the suffix
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["format"] == "exported-program" and record["files"] == [str(out)] and record["opset"] is None
    assert record["input"]["shape"] == [1, 3, 32, 32] and record["outputs"] == [
        {"name": "logits", "shape": [1, 10], "dtype": "float32"}
    ]
    assert record["leaves_out"] is None and "mean [0.4914" in record["input"]["expects"]
    check = record["check"]
    assert check["runtime"].startswith("torch.export.load") and check["batch_sizes"] == [1, 1]
    assert len(check["images"]) == 2 and 0 <= check["max_abs_diff"] <= check["tolerance"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.pt2"]  # no temporary left behind

    program = torch.export.load(str(out)).module()
    x = eager_inputs("resnet18-cifar")
    eager = zoo.load("resnet18-cifar", device="cpu")
    with torch.no_grad():
        exported = torch.cat([program(x[i : i + 1]) for i in range(len(x))])
        torch.testing.assert_close(exported, eager(x), atol=1e-4, rtol=1e-4)
    labels = zoo.card("resnet18-cifar").labels
    assert [labels[i] for i in exported.argmax(1)] == ["cat", "horse"]  # chelsea.png, horse.png


def test_classifier_onnx_dynamic_batch_in_onnxruntime(tmp_path, mirror):
    """resnet20-cifar through the Python API: any batch size, checked at 2 and 1; onnxruntime gives the eager
    logits on a batch size the check did not use, and the file names its model and labels."""
    import onnx
    import onnxruntime as ort

    out = tmp_path / "r20.onnx"
    record = zoo.export("resnet20-cifar", out, dynamic_batch=True)
    assert record["format"] == "onnx" and record["opset"] >= 18 and record["dynamic_batch"] is True
    assert record["input"]["shape"] == ["batch", 3, 32, 32] and record["check"]["batch_sizes"] == [2, 1, 1]
    assert record["check"]["runtime"].startswith("onnxruntime") and record["check"]["max_abs_diff"] < 1e-4
    assert record["versions"]["onnxruntime"] == ort.__version__
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["zoo.model"] == "resnet20-cifar" and json.loads(meta["zoo.labels"])[3] == "cat"
    sha256 = zoo.card("resnet20-cifar").variant().sha256
    assert record["weights"] == "akamaster" and meta["zoo.weights"] == f"akamaster sha256:{sha256}"
    assert model.opset_import[0].version == record["opset"]

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = eager_inputs("resnet20-cifar")
    x3 = torch.cat([x, x.flip(3)[:1]])  # three images: a batch size the check never ran
    (logits,) = session.run(None, {"images": x3.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(
            torch.from_numpy(logits), zoo.load("resnet20-cifar", device="cpu")(x3), atol=1e-4, rtol=1e-4
        )


@pytest.mark.slow
def test_detector_exported_program_states_what_it_leaves_out(tmp_path):
    """fastestdet-coco: the raw head output, and one line naming the decoding and NMS left out of the graph."""
    out = tmp_path / "fd.pt2"
    result = run("export", "fastestdet-coco", "--format", "exported-program", "-o", str(out))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"wrote {out} (ExportedProgram, batch 1, ")
    assert lines[1].startswith("input:     images float32 [1, 3, 352, 352]: RGB, the whole image stretched to 352x352")
    assert lines[2] == "output:    raw float32 [1, 85, 22, 22]"
    assert lines[3].startswith("checked:   max abs difference ") and "torch.export.load" in lines[3]
    left_out = [line for line in lines if line.startswith("left out:")]
    assert len(left_out) == 1 and "decode_fastestdet" in left_out[0] and "NMS (IoU 0.45)" in left_out[0]

    from zoo_detector.fastestdet import decode_fastestdet

    program = torch.export.load(str(out)).module()
    x = eager_inputs("fastestdet-coco")[:1]  # chelsea.png
    with torch.no_grad():
        raw = program(x)
        torch.testing.assert_close(raw, zoo.load("fastestdet-coco", device="cpu")(x), atol=1e-4, rtol=1e-4)
    (best,) = decode_fastestdet(raw, conf=0.5)[0]["labels"][:1].tolist()
    assert zoo.card("fastestdet-coco").labels[best] == "cat"


def test_a_failed_check_writes_nothing(tmp_path, mirror, monkeypatch):
    """An export that does not reproduce eager PyTorch is refused, and the file already there is untouched."""
    import zoo.runtime.export as export_module

    real = export_module._runner

    def off_by_a_bit(fmt, file):
        run_file, runtime = real(fmt, file)
        return (lambda x: tuple(t + 0.5 for t in run_file(x))), runtime

    monkeypatch.setattr(export_module, "_runner", off_by_a_bit)
    out = tmp_path / "r20.pt2"
    out.write_text("an earlier export")
    result = run("export", "resnet20-cifar", "-o", str(out))
    assert result.exit_code == 1
    assert result.output.startswith("Error: The export differs from eager PyTorch by 0.5 (tolerance ")
    assert result.output.endswith(") on 2 images; nothing written.\n")
    assert out.read_text() == "an earlier export" and [p.name for p in tmp_path.iterdir()] == ["r20.pt2"]


@pytest.mark.slow
def test_detector_onnx_dynamic_batch_and_a_refused_opset(tmp_path, mirror):
    out = tmp_path / "fd.onnx"
    record = zoo.export("fastestdet-coco", out, dynamic_batch=True)
    assert record["outputs"] == [{"name": "raw", "shape": ["batch", 85, 22, 22], "dtype": "float32"}]
    assert record["check"]["max_abs_diff"] < 5e-4 and "decode_fastestdet" in record["leaves_out"]
    # resnet20-cifar's shortcut pads channels; onnx's converter has no Pad adapter down to opset 17
    result = run("export", "resnet20-cifar", "-o", str(tmp_path / "r20.onnx"), "--opset", "17")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: --opset 17: torch's exporter cannot write 'resnet20-cifar' at opset 17")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fd.onnx"]
