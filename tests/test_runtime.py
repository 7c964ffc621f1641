"""The shared runtime on real files: datasets and the decode cache, prediction, evaluation, reports."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import zoo
from tests.conftest import register_resnet20_card
from zoo.cli import cli
from zoo.errors import ZooError
from zoo.runtime.datasets import DatasetError, Geometry, load_dataset
from zoo.runtime.evaluate import evaluate
from zoo.runtime.images import ImageError, decode_image, read_image
from zoo.runtime.predict import predict

CLASSES = ("circle", "square", "triangle")


def image_bytes(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(buffer, fmt)
    return buffer.getvalue()


def make_folder(root: Path, per_class: int = 4, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for label in CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = rng.integers(0, 255, (size, size + 4 * i, 3), dtype=np.uint8)
            (root / label / f"{i:03d}.png").write_bytes(image_bytes(array))
    return root


def zip_folder(folder: Path, archive: Path, prefix: str = "data/train/") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*.png")):
            zf.write(path, prefix + str(path.relative_to(folder)))
    return archive


@pytest.fixture()
def tiny_classifier(tmp_path, monkeypatch) -> str:
    """A CIFAR ResNet-20 card for 3 classes with (random, test-only) weights in a user registry."""
    return register_resnet20_card(tmp_path, monkeypatch, "shapes-resnet", list(CLASSES))


# -- images -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, mode",
    [
        ("JPEG", None),
        ("PNG", None),
        ("PNG", "L"),
        ("PNG", "RGBA"),
        ("PNG", "P"),
        ("WEBP", None),
        ("GIF", None),
        ("BMP", None),
        ("TIFF", None),
    ],
)
def test_every_common_image_becomes_rgb_uint8(fmt, mode):
    array = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    image = decode_image(image_bytes(array, fmt, mode), name=f"x.{fmt.lower()}")
    assert image.shape == (3, 20, 30) and image.dtype == torch.uint8
    if fmt in ("PNG", "BMP", "TIFF") and mode is None:  # lossless: exact pixels
        assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(array))


def test_16_bit_png_is_scaled_to_8_bits():
    array = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    image = decode_image(image_bytes(array), name="deep.png")
    assert image[0, 0].tolist() == [0, 100, 255]


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "the file is empty"),
        (b"GIF89a\x00garbage", "not a decodable image"),
        (b"plain text, not an image", "not a decodable image"),
    ],
)
def test_unreadable_image_names_the_file(data, reason, tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=f"Cannot read image {path}: {reason}"):
        read_image(path)


def test_truncated_jpeg_is_an_error_not_garbage(tmp_path):
    data = image_bytes(np.zeros((64, 64, 3), dtype=np.uint8), "JPEG")
    with pytest.raises(ImageError, match="truncated.jpg"):
        decode_image(data[:40], name="truncated.jpg")


# -- datasets and the decode cache ------------------------------------------------------------------


def test_folder_and_zip_give_the_same_dataset(tmp_path):
    folder = make_folder(tmp_path / "shapes")
    archive = zip_folder(folder, tmp_path / "shapes.zip")
    geometry = Geometry(resize=32, crop=32)
    a = load_dataset(folder, geometry=geometry, cache=False)
    b = load_dataset(archive, geometry=geometry, cache=False)
    assert a.classes == b.classes == CLASSES
    assert a.images.shape == (12, 3, 32, 32) and torch.equal(a.images, b.images)
    assert a.targets.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_different_sizes_without_geometry_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="images have different sizes"):
        load_dataset(make_folder(tmp_path / "shapes"), cache=False)


def test_decode_cache_hits_and_is_invalidated_by_content(tmp_path, zoo_home):
    folder = make_folder(tmp_path / "shapes")
    geometry = Geometry(resize=32, crop=32)
    first = load_dataset(folder, geometry=geometry)
    second = load_dataset(folder, geometry=geometry)
    assert not first.from_cache and second.from_cache and torch.equal(first.images, second.images)
    cached = sorted(p.suffix for p in (zoo_home / "datasets").iterdir())
    assert cached == [".json", ".u8"]  # the pixels, memory-mapped, and their index: nothing partial left
    # same names and sizes, other pixels: a new key, decoded again
    (folder / "circle" / "000.png").write_bytes(image_bytes(np.full((32, 32, 3), 7, dtype=np.uint8)))
    third = load_dataset(folder, geometry=geometry)
    assert not third.from_cache and third.images[0].unique().tolist() == [7]


def test_decoded_images_are_memory_mapped_and_a_damaged_cache_is_rebuilt(tmp_path, zoo_home):
    folder = make_folder(tmp_path / "shapes")
    geometry = Geometry(resize=32, crop=32)
    first = load_dataset(folder, geometry=geometry)
    second = load_dataset(folder, geometry=geometry)
    assert second.from_cache and torch.equal(first.images, second.images)
    (pixels,) = (zoo_home / "datasets").glob("*.u8")
    assert pixels.stat().st_size == second.images.numel()  # the tensor is the file, not a copy of it
    expected = first.images.clone()
    del first, second  # a mapping must not outlive a file truncated in place (the kernel answers with SIGBUS)
    pixels.write_bytes(pixels.read_bytes()[:100])  # truncated by someone else: rebuilt, not trusted
    third = load_dataset(folder, geometry=geometry)
    assert not third.from_cache and torch.equal(third.images, expected)
    uncached = load_dataset(folder, geometry=geometry, cache=False)
    assert torch.equal(uncached.images, expected)
    assert not list((zoo_home / "datasets").glob("*.partial"))


def test_bad_image_in_a_dataset(tmp_path):
    folder = make_folder(tmp_path / "shapes")
    (folder / "square" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        load_dataset(folder, geometry=Geometry(32, 32), cache=False)
    dataset = load_dataset(folder, geometry=Geometry(32, 32), skip_bad=True, cache=False)
    assert len(dataset) == 12 and [Path(p).name for p in dataset.skipped] == ["broken.jpg"]


def write_cifar_batches(root: Path, n: int = 20) -> tuple[np.ndarray, list[int]]:
    root.mkdir()
    rng = np.random.default_rng(1)
    data = rng.integers(0, 255, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    (root / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))
    return data, labels


def test_cifar_python_batches(tmp_path):
    data, labels = write_cifar_batches(tmp_path / "cifar-10-batches-py")
    dataset = load_dataset(tmp_path / "cifar-10-batches-py", cache=False)
    assert dataset.classes[0] == "airplane" and dataset.targets.tolist() == labels
    assert torch.equal(dataset.images, torch.from_numpy(data.reshape(-1, 3, 32, 32)))


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_batch_with_a_pickle_payload_is_refused(tmp_path):
    root = tmp_path / "evil"
    write_cifar_batches(root)
    marker = tmp_path / "pwned"
    (root / "test_batch").write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": []}, protocol=2))
    with pytest.raises(DatasetError, match="refusing to load posix.system"):
        load_dataset(root, cache=False)
    assert not marker.exists()


# -- predict and evaluate ---------------------------------------------------------------------------


def test_predict_on_files_of_every_kind(tmp_path, tiny_classifier):
    rng = np.random.default_rng(3)
    files = []
    for fmt, mode, size in [
        ("JPEG", None, (48, 64)),
        ("PNG", "L", (32, 32)),
        ("PNG", "RGBA", (40, 40)),
        ("WEBP", None, (32, 50)),
    ]:
        path = tmp_path / f"img-{len(files)}.{fmt.lower()}"
        path.write_bytes(image_bytes(rng.integers(0, 255, (*size, 3), dtype=np.uint8), fmt, mode))
        files.append(path)
    records = predict(tiny_classifier, files, topk=2, device="cpu")
    model = zoo.load(tiny_classifier, device="cpu")
    preprocess = zoo.transforms(tiny_classifier)
    for path, record in zip(files, records, strict=True):
        assert [p["label"] for p in record["predictions"]][0] in CLASSES and len(record["predictions"]) == 2
        with torch.inference_mode():
            expected = model(preprocess(read_image(path))[None]).softmax(1)[0]
        best = record["predictions"][0]
        assert best["index"] == int(expected.argmax()) and abs(best["probability"] - float(expected.max())) < 1e-3


def test_predict_cli_json_and_skip_bad(tmp_path, tiny_classifier):
    good = tmp_path / "good.png"
    good.write_bytes(image_bytes(np.zeros((32, 32, 3), dtype=np.uint8)))
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    failed = CliRunner().invoke(cli, ["predict", tiny_classifier, str(good), str(bad)])
    assert failed.exit_code == 1 and f"Cannot read image {bad}" in failed.output
    result = CliRunner().invoke(
        cli, ["predict", tiny_classifier, str(good), str(bad), "--skip-bad", "--json", "--topk", "3", "--device", "cpu"]
    )
    records = json.loads(result.output)
    assert len(records[0]["predictions"]) == 3 and "error" in records[1]


def test_evaluate_matches_a_hand_written_loop(tmp_path, tiny_classifier):
    folder = make_folder(tmp_path / "shapes", per_class=6)
    result = evaluate(tiny_classifier, folder, device="cpu", show_progress=False)
    model = zoo.load(tiny_classifier, device="cpu")
    preprocess = zoo.transforms(tiny_classifier)
    correct = per_class = 0
    hits = {c: 0 for c in CLASSES}
    for index, label in enumerate(CLASSES):
        for path in sorted((folder / label).glob("*.png")):
            with torch.inference_mode():
                predicted = int(model(preprocess(read_image(path))[None]).argmax())
            correct += predicted == index
            hits[label] += predicted == index
    assert result.images == 18
    assert result.metrics["top1"] == round(100 * correct / 18, 2)
    assert result.metrics["per_class"] == {c: round(100 * hits[c] / 6, 2) for c in CLASSES}
    assert sum(map(sum, result.metrics["confusion"])) == 18 and "top5" not in result.metrics
    del per_class


def test_flip_tta_averages_the_logits_of_the_image_and_its_mirror(tmp_path, tiny_classifier):
    """--tta flip against a hand-written loop: the mean of the two passes' logits decides; the setting is recorded
    and predict goes through the same forward pass. The random test weights are not mirror-symmetric, so the
    averaged logits differ from the plain ones (checked) and a loop that ignored tta would fail."""
    folder = make_folder(tmp_path / "shapes", per_class=6)
    result = evaluate(tiny_classifier, folder, device="cpu", show_progress=False, fuse=False, tta="flip")
    model = zoo.load(tiny_classifier, device="cpu")
    preprocess = zoo.transforms(tiny_classifier)
    correct = 0
    for index, label in enumerate(CLASSES):
        for path in sorted((folder / label).glob("*.png")):
            x = preprocess(read_image(path))[None]
            with torch.inference_mode():
                plain, mirrored = model(x), model(x.flip(3))
            assert not torch.allclose(plain, mirrored)
            correct += int(((plain + mirrored) / 2).argmax()) == index
    assert result.metrics["top1"] == round(100 * correct / 18, 2)
    assert result.settings["tta"] == "flip"
    image = next((folder / CLASSES[0]).glob("*.png"))
    cli_run = CliRunner().invoke(cli, ["predict", tiny_classifier, str(image), "--tta", "flip", "--json"])
    assert cli_run.exit_code == 0, cli_run.output
    x = preprocess(read_image(image))[None]
    with torch.inference_mode():
        expected = torch.softmax((model(x) + model(x.flip(3))) / 2, 1)[0]
    top = json.loads(cli_run.output)[0]["predictions"][0]
    assert top["label"] == CLASSES[int(expected.argmax())]
    assert abs(top["probability"] - round(float(expected.max()), 4)) < 1e-3
    bad = CliRunner().invoke(cli, ["eval", tiny_classifier, "--data", str(folder), "--tta", "rotate"])
    assert bad.exit_code == 1 and "'rotate' is not one of 'none', 'flip'" in bad.output
    with pytest.raises(ZooError, match="Unknown test-time augmentation tta='rotate'; use one of: none, flip"):
        zoo.predict(tiny_classifier, [image], tta="rotate")


def test_cpu_streams_measure_the_same_as_one_stream(tmp_path, tiny_classifier, monkeypatch):
    """Batches on parallel single-threaded streams (a CPU's default): the same metrics, to the confusion matrix,
    as one stream; the setting is recorded and the caller's thread count comes back."""
    folder = make_folder(tmp_path / "shapes", per_class=6)
    threads = torch.get_num_threads()
    results = {}
    for streams in ("1", "3"):
        monkeypatch.setenv("ZOO_CPU_STREAMS", streams)
        results[streams] = evaluate(tiny_classifier, folder, device="cpu", batch_size=4, show_progress=False)
        assert results[streams].settings["streams"] == int(streams)
        assert torch.get_num_threads() == threads
    assert results["1"].metrics == results["3"].metrics and results["3"].images == 18
    monkeypatch.setenv("ZOO_CPU_STREAMS", "two")
    with pytest.raises(ZooError, match="ZOO_CPU_STREAMS='two' is not a positive whole number"):
        evaluate(tiny_classifier, folder, device="cpu", show_progress=False)


def test_fp32_evaluation_on_a_cpu_runs_the_fused_graph_and_measures_the_same(tmp_path, tiny_classifier, monkeypatch):
    """The fused oneDNN graph (zoo.runtime.graph) is what fp32 evaluation on a CPU runs; the metrics equal the
    eager model's, to the confusion matrix, with a last batch smaller than the rest; bf16, too few batches to
    pay for the graph, and ZOO_CPU_GRAPH=0 run eager; the process-wide fusion switch comes back as it was."""
    from zoo.runtime import graph as graph_module

    folder = make_folder(tmp_path / "shapes", per_class=6)  # 18 images: batches of 4, 4, 4, 4 and 2
    few = evaluate(tiny_classifier, folder, device="cpu", batch_size=4, show_progress=False)
    assert few.settings["graph"] is False  # 4 whole batches, fewer than graph.MIN_BATCHES
    monkeypatch.setattr(graph_module, "MIN_BATCHES", 4)
    fusion = torch._C._jit_llga_enabled()
    graph = evaluate(tiny_classifier, folder, device="cpu", batch_size=4, show_progress=False)
    assert graph.settings["graph"] is True and torch._C._jit_llga_enabled() == fusion
    bf16 = evaluate(tiny_classifier, folder, device="cpu", batch_size=4, bf16=True, show_progress=False)
    assert bf16.settings["graph"] is False
    monkeypatch.setenv("ZOO_CPU_GRAPH", "0")
    eager = evaluate(tiny_classifier, folder, device="cpu", batch_size=4, show_progress=False)
    assert eager.settings["graph"] is False
    assert graph.metrics == eager.metrics == few.metrics and graph.images == 18
    monkeypatch.setenv("ZOO_CPU_GRAPH", "maybe")
    with pytest.raises(ZooError, match="ZOO_CPU_GRAPH='maybe' is not 0 or 1"):
        evaluate(tiny_classifier, folder, device="cpu", show_progress=False)


def test_streams_keep_order_run_each_call_in_its_modes_and_bound_what_is_in_flight():
    import threading

    from zoo.runtime.streams import map_in_streams

    started: list[int] = []
    seen: dict[int, tuple[str, bool, int]] = {}
    lock = threading.Lock()

    def items():
        for i in range(20):
            with lock:
                started.append(i)
            yield i

    def square(i: int) -> int:
        seen[i] = (threading.current_thread().name, torch.is_inference_mode_enabled(), torch.get_num_threads())
        return i * i

    threads = torch.get_num_threads()
    out = []
    for value in map_in_streams(square, items(), 2, torch.inference_mode):
        out.append(value)
        assert len(started) <= len(out) + 4  # at most 2 x streams submitted ahead of what was consumed
    assert out == [i * i for i in range(20)]
    assert all(name.startswith("zoo-stream") and inference and n == 1 for name, inference, n in seen.values())
    assert torch.get_num_threads() == threads

    def fails(i: int) -> int:
        if i == 3:
            raise ValueError("batch 3")
        return i

    with pytest.raises(ValueError, match="batch 3"):
        list(map_in_streams(fails, range(10), 2, torch.inference_mode))
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("fuse", [True, False])
def test_evaluate_hands_the_callers_model_back_unchanged(tmp_path, tiny_classifier, fuse):
    """A model in train mode is measured in eval mode, then returned in train mode and contiguous memory."""
    folder = make_folder(tmp_path / "shapes", per_class=2)
    expected = evaluate(tiny_classifier, folder, device="cpu", show_progress=False).metrics["top1"]
    model = zoo.load(tiny_classifier, device="cpu").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = evaluate(tiny_classifier, folder, model=model, fuse=fuse, show_progress=False)
    assert result.metrics["top1"] == expected
    assert model.training
    assert all(p.is_contiguous() for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched


def test_eval_cli_report_and_compare(tmp_path, tiny_classifier):
    folder = make_folder(tmp_path / "shapes")
    out = tmp_path / "report"
    result = CliRunner().invoke(
        cli, ["eval", tiny_classifier, "--data", str(folder), "--report", str(out), "--json", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert json.loads((out / "metrics.json").read_text())["metrics"] == record["metrics"]
    with Image.open(out / "confusion.png") as png:
        assert png.format == "PNG" and png.size[0] > 100
    compare = CliRunner().invoke(cli, ["eval", tiny_classifier, "--data", str(folder), "--compare"])
    assert compare.exit_code == 1 and "has no top1 figure on its card" in compare.output


def test_eval_refuses_classes_the_model_does_not_know(tmp_path, tiny_classifier):
    folder = make_folder(tmp_path / "shapes")
    (folder / "circle").rename(folder / "hexagon")
    result = CliRunner().invoke(cli, ["eval", tiny_classifier, "--data", str(folder)])
    assert result.exit_code == 1 and "Dataset classes ['hexagon'] are not labels of model" in result.output


@pytest.mark.parametrize("preset", ["crop-flip", "crop-flip-erase", "crop-flip-trivial-erase"])
def test_augment_presets_are_seeded_by_the_loops_generator(preset):
    from zoo_classifier.task import ClassifierTask

    task = ClassifierTask(zoo.card("resnet20-cifar"))
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = task.augment(images, preset, torch.Generator().manual_seed(7))
    after = torch.rand(1)  # TrivialAugment draws from torch's global generator inside fork_rng only
    b = task.augment(images, preset, torch.Generator().manual_seed(7))
    c = task.augment(images, preset, torch.Generator().manual_seed(8))
    assert torch.equal(before, after)
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, b) and not torch.equal(a, c)  # a resumed run redraws the same batches
    assert not torch.equal(a, images)


def test_trivial_augment_draws_one_op_per_image():
    from zoo_classifier.task import _trivial_augment

    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = _trivial_augment(images, torch.Generator().manual_seed(0))
    changed = (out != images).flatten(1).any(1)
    # one of 14 ops is the identity and a few strengths are no-ops; the rest change their image
    assert 40 <= changed.sum() < 64, changed.sum()


def test_unknown_augment_preset_lists_the_known_ones():
    from zoo_classifier.task import ClassifierTask

    with pytest.raises(ZooError, match="crop-flip-trivial-erase"):
        ClassifierTask(zoo.card("resnet20-cifar")).augment(
            torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "autoaugment", torch.Generator()
        )


def test_ema_warms_up_then_holds_its_decay():
    """Update n of the moving average uses min(decay, (1 + n) / (10 + n)): a short run's average follows the
    weights instead of staying near the random start (diffusers' EMAModel and timm's ModelEmaV3 do the same)."""
    import torch

    from zoo.runtime.train.ema import averaged

    model = torch.nn.Linear(1, 1, bias=False)
    ema = averaged(model, 0.999)
    values = [1.0, 2.0, 3.0]
    with torch.no_grad():
        model.weight.fill_(values[0])
        ema.update_parameters(model)  # the first update copies
        expected = values[0]
        for n, value in enumerate(values[1:], start=1):
            model.weight.fill_(value)
            ema.update_parameters(model)
            decay = min(0.999, (1 + n) / (10 + n))
            expected = decay * expected + (1 - decay) * value
    assert float(ema.module.weight.detach()) == pytest.approx(expected, rel=1e-6)
    assert float(ema.module.weight.detach()) > 2.5  # without the warm-up: 1.002
    with torch.no_grad():
        for _ in range(20_000):
            ema.n_averaged += 1  # far into a run: the decay itself binds
        model.weight.fill_(0.0)
        before = float(ema.module.weight.detach())
        ema.update_parameters(model)
    assert float(ema.module.weight.detach()) == pytest.approx(before * 0.999, rel=1e-6)
