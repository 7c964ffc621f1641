"""Detection datasets: COCO, Pascal VOC and YOLO readers and writers (zoo_detector.annotations) and `zoo data`.

Small datasets are written by the tests (Pillow-made images in tmp_path); coco128 and raccoon from ../shared check
the known facts and the round trips, and skip with the reason where ../shared is absent.
"""

from __future__ import annotations

import json
import posixpath
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from PIL import Image

import zoo_detector.annotations as annotations_module
from tests.conftest import require_shared
from zoo.cli import cli
from zoo_detector.annotations import (
    ROUND_TRIP_TOLERANCE_PX,
    AnnotationError,
    DetectionDataset,
    DetectionSample,
    read_detection_dataset,
    write_detection_dataset,
)
from zoo_detector.data_cli import add_commands

# -- builders for small datasets ----------------------------------------------------------------------


def _image(path: Path, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128).save(path)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_yolo(root: Path) -> Path:
    """train: a (2 boxes kept, one clipped, one dropped), b (no label file), c (empty label, grayscale PNG);
    val: d; plus a label file without an image."""
    _write(
        root / "data.yaml",
        "path: ../somewhere/else\ntrain: images/train\nval: images/val\ntest:\nnames:\n  0: cat\n  1: dog\n",
    )
    for name in ("train/a.jpg", "train/b.jpg", "val/d.jpg"):
        _image(root / "images" / name)
    _image(root / "images/train/c.png", mode="L")
    _write(root / "labels/train/a.txt", "0 0.5 0.5 0.5 0.5\n1 0.95 0.5 0.2 0.2\n\n1 1.2 0.5 0.1 0.1\n")
    _write(root / "labels/train/c.txt", "")
    _write(root / "labels/train/orphan.txt", "0 0.5 0.5 0.1 0.1\n")
    _write(root / "labels/val/d.txt", "1 0.25 0.25 0.5 0.5\n")
    return root


def _coco_doc(images: list[dict], annotations: list[dict]) -> str:
    categories = [{"id": 7, "name": "dog"}, {"id": 2, "name": "cat"}]  # ids out of order on purpose
    return json.dumps({"images": images, "annotations": annotations, "categories": categories})


def make_coco(root: Path) -> Path:
    """train: a (one box, one crowd region), b (no annotations); val: c (a box past the right edge)."""
    for name in ("train2017/a.jpg", "train2017/b.jpg", "val2017/c.jpg"):
        _image(root / name)
    _write(
        root / "annotations/instances_train2017.json",
        _coco_doc(
            [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}, {"id": 2, "file_name": "b.jpg"}],
            [
                {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20], "iscrowd": 0},
                {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 1},
            ],
        ),
    )
    _write(
        root / "annotations/instances_val2017.json",
        _coco_doc(
            [{"id": 1, "file_name": "c.jpg", "width": 64, "height": 48}],
            [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [50.5, 4, 20, 10]}],
        ),
    )
    _write(root / "annotations/captions_train2017.json", json.dumps({"annotations": [], "images": []}))
    return root


def _voc_xml(filename: str, objects: list[tuple[str, tuple]], size: tuple[int, int] | None = (64, 48)) -> str:
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    return (
        f'<?xml version="1.0"?>\n<annotation>\n<folder>JPEGImages</folder>\n<filename>{filename}</filename>\n'
        f"{size_xml}\n{objs}\n</annotation>\n"
    )


def make_voc(root: Path) -> Path:
    """a: dog + cat (train); b: no objects and no <size> (val; 32x40 from the header)."""
    _image(root / "JPEGImages/a.jpg")
    _image(root / "JPEGImages/b.jpg", size=(32, 40))
    _write(root / "Annotations/a.xml", _voc_xml("a.jpg", [("dog", (1, 2, 30, 40)), ("cat", (5.5, 6, 60, 47))]))
    _write(root / "Annotations/b.xml", _voc_xml("b.jpg", [], size=None))
    _write(root / "ImageSets/Main/train.txt", "a\n")
    _write(root / "ImageSets/Main/val.txt", "b\n")
    _write(root / "ImageSets/Main/trainval.txt", "a\nb\n")
    _write(root / "ImageSets/Main/dog_train.txt", "a  1\n")
    return root


def _zip(folder: Path, out: Path, top: str = "ds") -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{top}/{path.relative_to(folder).as_posix()}")
    return out


def _by_name(dataset: DetectionDataset) -> dict[str, DetectionSample]:
    return {posixpath.basename(s.image): s for s in dataset.samples}


def assert_same(a: DetectionDataset, b: DetectionDataset, tolerance: float = ROUND_TRIP_TOLERANCE_PX) -> float:
    """Same classes, images (by file name), sizes, labels, splits; boxes within `tolerance` px; returns the error."""
    assert b.classes == a.classes
    assert b.splits() == a.splits() and b.split_aliases == a.split_aliases
    sa, sb = _by_name(a), _by_name(b)
    assert sorted(sb) == sorted(sa)
    worst = 0.0
    for name, x in sa.items():
        y = sb[name]
        assert (y.width, y.height, y.labels, y.split) == (x.width, x.height, x.labels, x.split), name
        assert len(y.boxes) == len(x.boxes), name
        for bx, by in zip(x.boxes, y.boxes, strict=True):
            worst = max(worst, *(abs(p - q) for p, q in zip(bx, by, strict=True)))
    assert worst <= tolerance
    return worst


# -- reading the three formats ------------------------------------------------------------------------


def test_yolo_boxes_background_orphans_and_splits(tmp_path):
    ds = read_detection_dataset(make_yolo(tmp_path / "yolo"))
    assert ds.format == "yolo" and ds.classes == ("cat", "dog")
    assert [s.image for s in ds.samples] == [
        "images/train/a.jpg",
        "images/train/b.jpg",
        "images/train/c.png",
        "images/val/d.jpg",
    ]
    a, b, c, d = ds.samples
    assert a.boxes == [(16.0, 12.0, 48.0, 36.0), pytest.approx((54.4, 19.2, 64.0, 28.8))] and a.labels == [0, 1]
    assert (b.boxes, c.boxes, c.width, c.height) == ([], [], 64, 48)  # background images are kept
    assert d.boxes == [(0.0, 0.0, 32.0, 24.0)] and d.labels == [1]
    assert (ds.clipped, ds.dropped, ds.orphan_labels) == (1, 1, 1)
    assert ds.splits() == ("train", "val") and [s.split for s in ds.samples] == ["train"] * 3 + ["val"]
    assert ds.read_bytes(d) == (tmp_path / "yolo/images/val/d.jpg").read_bytes()


def test_yolo_polygons_become_boxes_and_broken_side_files_do_not_matter(tmp_path):
    root = make_yolo(tmp_path / "yolo")
    _write(root / "labels/val/d.txt", "1.0 0.1 0.1 0.5 0.2 0.3 0.5\n")  # a segment: its bounding box
    _write(root / "notes/settings.yml", "key: [unclosed\n")  # not the data yaml: ignored
    d = read_detection_dataset(root).samples[-1]
    assert d.labels == [1] and d.boxes == [pytest.approx((6.4, 4.8, 32.0, 24.0))]


def test_yolo_split_lists_aliases_and_classes_txt(tmp_path):
    root = make_yolo(tmp_path / "yolo")
    _write(root / "data.yaml", "train: train.txt\nval: train.txt\nnames: [cat, dog]\n")
    _write(root / "train.txt", "./images/train/a.jpg\n/home/someone/yolo/images/val/d.jpg\n")
    ds = read_detection_dataset(root)
    assert ds.split_aliases == {"val": "train"} and ds.splits() == ("train", "val")
    assert {s.image: s.split for s in ds.samples if s.split} == {
        "images/train/a.jpg": "train",
        "images/val/d.jpg": "train",
    }
    val = ds.select("val")
    assert [s.split for s in val.samples] == ["val", "val"] and val.splits() == ("val",)

    (root / "data.yaml").unlink()
    _write(root / "classes.txt", "cat\ndog\n")  # no yaml: names from classes.txt, splits from images/<split>/
    ds = read_detection_dataset(root)
    assert ds.classes == ("cat", "dog") and ds.splits() == ("train", "val")


def test_coco_categories_splits_crowd_and_clipping(tmp_path):
    ds = read_detection_dataset(make_coco(tmp_path / "coco"))
    assert ds.format == "coco"
    assert ds.classes == ("cat", "dog") and ds.category_ids == (2, 7)  # sorted by id, ids kept
    by = _by_name(ds)
    assert by["a.jpg"].boxes == [(10.0, 10.0, 30.0, 30.0)] and by["a.jpg"].labels == [1]
    assert by["b.jpg"].boxes == [] and (by["b.jpg"].width, by["b.jpg"].height) == (64, 48)  # size from the header
    assert by["c.jpg"].boxes == [(50.5, 4.0, 64.0, 14.0)] and ds.clipped == 1
    assert ds.crowd == 1 and ds.splits() == ("train", "val")
    assert (by["a.jpg"].split, by["c.jpg"].split) == ("train", "val")
    assert by["a.jpg"].image == "train2017/a.jpg"


def test_voc_names_sorted_imagesets_and_empty_files(tmp_path):
    ds = read_detection_dataset(make_voc(tmp_path / "voc"))
    assert ds.format == "voc" and ds.classes == ("cat", "dog")
    a, b = ds.samples
    assert a.boxes == [(1.0, 2.0, 30.0, 40.0), (5.5, 6.0, 60.0, 47.0)] and a.labels == [1, 0]
    assert (b.boxes, b.width, b.height) == ([], 32, 40)
    assert (a.split, b.split) == ("train", "val") and ds.splits() == ("train", "val")  # trainval, dog_train ignored


def test_raccoon_style_csv_splits(tmp_path):
    root = make_voc(tmp_path / "voc")
    for path in (root / "ImageSets/Main").iterdir():
        path.unlink()
    _write(
        root / "data/train_labels.csv",
        "filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,64,48,dog,1,2,30,40\na.jpg,64,48,cat,5,6,60,47\n",
    )
    _write(root / "data/test_labels.csv", "filename,width,height,class\nb.jpg,32,40,none\n")
    _write(root / "data/all_labels.csv", "filename\na.jpg\nb.jpg\n")  # not a split: ignored
    ds = read_detection_dataset(root)
    assert [s.split for s in ds.samples] == ["train", "test"] and ds.splits() == ("train", "test")
    with pytest.raises(AnnotationError, match=r"has no split 'val'; its splits are 'train', 'test'"):
        ds.select("val")


def test_a_zip_reads_like_its_folder(tmp_path):
    for make in (make_yolo, make_coco, make_voc):
        folder = make(tmp_path / make.__name__)
        zipped = read_detection_dataset(_zip(folder, tmp_path / f"{make.__name__}.zip"))
        plain = read_detection_dataset(folder)
        assert zipped.subdir == "ds" and plain.subdir == ""
        assert (zipped.samples, zipped.classes, zipped.split_aliases) == (
            plain.samples,
            plain.classes,
            plain.split_aliases,
        )
        for z, p in zip(zipped.samples, plain.samples, strict=True):
            assert zipped.read_bytes(z) == plain.read_bytes(p)


# -- errors: each names the file and the line or element --------------------------------------------------


def _raises(path: Path, *patterns: str) -> str:
    with pytest.raises(AnnotationError) as info:
        read_detection_dataset(path)
    message = str(info.value)
    assert "\n" not in message
    for pattern in patterns:
        assert pattern in message, message
    return message


def test_broken_xml_names_the_line(tmp_path):
    root = make_voc(tmp_path / "voc")
    _write(root / "Annotations/b.xml", "<annotation>\n<filename>b.jpg</filename>\n<object>\n</annotation>\n")
    _raises(root, "b.xml, line 4", "not well-formed XML")


def test_voc_x2_before_x1_names_the_object(tmp_path):
    root = make_voc(tmp_path / "voc")
    _write(root / "Annotations/a.xml", _voc_xml("a.jpg", [("dog", (1, 2, 30, 40)), ("cat", (50, 6, 20, 47))]))
    _raises(root, "a.xml, annotation/object[2]/bndbox: xmax 20 < xmin 50")


def test_coco_negative_width_and_bad_json(tmp_path):
    root = make_coco(tmp_path / "coco")
    _write(
        root / "annotations/instances_val2017.json",
        _coco_doc(
            [{"id": 1, "file_name": "c.jpg"}],
            [
                {"id": 1, "image_id": 1, "category_id": 2, "bbox": [30, 4, -20, 10]},
                {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 4, 2, 1]},
            ],
        ),
    )
    _raises(root, "instances_val2017.json, annotations[0]", "negative width (x2 < x1)")
    _write(root / "annotations/instances_val2017.json", '{"images": [],\n "annotations": [],\n "categories": [,]}')
    _raises(root, "instances_val2017.json, line 3 column", "not valid JSON")


def test_yolo_class_id_out_of_range_and_malformed_line(tmp_path):
    root = make_yolo(tmp_path / "yolo")
    _write(root / "labels/val/d.txt", "1 0.25 0.25 0.5 0.5\n2 0.5 0.5 0.1 0.1\n")
    _raises(root, "d.txt, line 2: class id 2 is outside the 2 names", "data.yaml")
    _write(root / "labels/val/d.txt", "1 0.25 0.25 0.5\n")
    _raises(root, "d.txt, line 1: expected 'class cx cy w h'")
    _write(root / "labels/val/d.txt", "1 0.25 0.25 0.5 0.5\n")
    _write(root / "data.yaml", "train: images/train\nnames: {0: cat, 2: dog}\n")
    _raises(root, "data.yaml, line 2", "0..1")


def test_missing_images_are_errors(tmp_path):
    root = make_coco(tmp_path / "coco")
    (root / "val2017/c.jpg").unlink()
    _raises(root, "instances_val2017.json, images[0]", "'c.jpg' is not in the dataset")
    root = make_voc(tmp_path / "voc")
    (root / "JPEGImages/a.jpg").unlink()
    _raises(root, "a.xml, annotation/filename", "'a.jpg' is not in the dataset")
    root = make_yolo(tmp_path / "yolo")
    _write(root / "data.yaml", "train: list.txt\nnames: [cat, dog]\n")
    _write(root / "list.txt", "images/train/a.jpg\nimages/train/gone.jpg\n")
    _raises(root, "list.txt, line 2", "'images/train/gone.jpg' is not in the dataset")


def test_an_image_in_two_splits_is_an_error(tmp_path):
    root = make_voc(tmp_path / "voc")
    _write(root / "ImageSets/Main/val.txt", "b\na\n")
    _raises(root, "val.txt", "'JPEGImages/a.jpg' is in split 'val' and also in 'train'")


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "ds/../../evil.txt", "C:\\evil.txt"])
def test_a_hostile_zip_is_refused(tmp_path, member):
    archive = _zip(make_yolo(tmp_path / "yolo"), tmp_path / "hostile.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(zipfile.ZipInfo(member), b"0 0.5 0.5 0.1 0.1\n")
    _raises(archive, "hostile.zip", repr(member), "absolute path or a '..'")


def test_xml_with_a_dtd_is_refused(tmp_path):
    root = make_voc(tmp_path / "voc")
    _write(
        root / "Annotations/b.xml",
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">]>\n'
        "<annotation><filename>b.jpg</filename><name>&lol;</name></annotation>\n",
    )
    _raises(root, "b.xml", "DTD")


def test_oversized_annotation_files_are_refused(tmp_path, monkeypatch):
    root = make_voc(tmp_path / "voc")
    monkeypatch.setattr(annotations_module, "MAX_TEXT_BYTES", 100)
    _raises(root, "larger than the 100 bytes")


def test_an_unknown_layout_says_what_each_format_expects(tmp_path):
    _write(tmp_path / "notes/readme.txt", "hello")
    _write(tmp_path / "notes/labels/x.txt", "0 0.5 0.5 0.1 0.1")
    message = _raises(tmp_path / "notes", "not a detection dataset")
    for expected in (
        "COCO (a .json file with 'images', 'annotations' and 'categories'",
        "Pascal VOC (.xml",
        "<annotation>",
        "YOLO (labels/*.txt beside images/",
        "data .yaml",
        "classes.txt",
        "found 1 labels/*.txt but no class names",
    ):
        assert expected in message
    _raises(tmp_path / "nowhere", "does not exist")


# -- writing and round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [make_yolo, make_coco, make_voc])
@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_round_trip_through_each_format(tmp_path, source, fmt):
    original = read_detection_dataset(source(tmp_path / "src"))
    write_detection_dataset(original, tmp_path / "out", fmt)
    back = read_detection_dataset(tmp_path / "out")
    assert back.format == fmt
    assert_same(original, back)
    if fmt == "coco" or source is not make_coco:
        assert back.category_ids == original.category_ids
    for sample in back.samples:
        match = _by_name(original)[posixpath.basename(sample.image)]
        assert back.read_bytes(sample) == original.read_bytes(match)
    assert not (tmp_path / "out.partial").exists()


def test_aliases_and_samples_without_split_survive(tmp_path):
    root = make_yolo(tmp_path / "yolo")
    _write(root / "data.yaml", "train: images/train\nval: images/train\nnames: [cat, dog]\n")
    original = read_detection_dataset(root)  # images/val/d.jpg is in no split
    assert original.split_aliases == {"val": "train"} and _by_name(original)["d.jpg"].split is None
    current = original
    for i, fmt in enumerate(["coco", "voc", "yolo"]):
        write_detection_dataset(current, tmp_path / f"out{i}", fmt)
        current = read_detection_dataset(tmp_path / f"out{i}")
        assert_same(original, current)


def test_clashing_file_names_are_made_unique(tmp_path):
    _image(tmp_path / "src/one/x.jpg")
    _image(tmp_path / "src/two/x.jpg", size=(20, 10))
    _image(tmp_path / "src/one/y.png")
    _image(tmp_path / "src/one/y.jpg")
    samples = [DetectionSample(p, 64, 48, [(1.0, 1.0, 5.0, 5.0)], [0]) for p in ("one/x.jpg", "one/y.jpg", "one/y.png")]
    samples.insert(2, DetectionSample("two/x.jpg", 20, 10, [], []))
    dataset = DetectionDataset(tmp_path / "src", "yolo", ("thing",), samples)
    write_detection_dataset(dataset, tmp_path / "voc", "voc")
    assert sorted(p.name for p in (tmp_path / "voc/JPEGImages").iterdir()) == [
        "one__x.jpg",
        "one__y_jpg.jpg",
        "one__y_png.png",
        "two__x.jpg",
    ]
    assert len(read_detection_dataset(tmp_path / "voc").samples) == 4


def test_the_writer_refuses_a_full_folder_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    dataset = read_detection_dataset(make_yolo(tmp_path / "yolo"))
    _write(tmp_path / "full/keep.txt", "mine")
    with pytest.raises(AnnotationError, match="already exists and is not empty"):
        write_detection_dataset(dataset, tmp_path / "full", "coco")
    assert (tmp_path / "full/keep.txt").read_text() == "mine"
    with pytest.raises(AnnotationError, match="Unknown dataset format 'pascal'"):
        write_detection_dataset(dataset, tmp_path / "new", "pascal")

    calls = []

    def failing(self, sample):
        calls.append(sample)
        if len(calls) == 3:
            raise AnnotationError("disk on fire")
        return b"bytes"

    monkeypatch.setattr(DetectionDataset, "read_bytes", failing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotationError, match="disk on fire"):
        write_detection_dataset(dataset, tmp_path / "empty", "yolo")
    assert not (tmp_path / "empty.partial").exists() and list((tmp_path / "empty").iterdir()) == []


def test_annotations_import_no_torch():
    code = (
        "import sys, zoo_detector.annotations, zoo_detector.data_cli; "
        "print(sorted(m for m in ('torch', 'torchvision', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the shared datasets ----------------------------------------------------------------------------------


def _timed_read(path: Path) -> tuple[DetectionDataset, float]:
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        dataset = read_detection_dataset(path)
        best = min(best, time.perf_counter() - start)
    return dataset, best


def test_coco128_facts_and_round_trip(tmp_path):
    ds, seconds = _timed_read(require_shared("datasets", "coco128.zip"))
    boxes = sum(len(s.boxes) for s in ds.samples)
    present = {label for s in ds.samples for label in s.labels}
    assert (ds.format, len(ds.samples), boxes, len(ds.classes), len(present)) == ("yolo", 128, 929, 80, 71)
    assert sum(not s.boxes for s in ds.samples) == 2 and ds.orphan_labels == 2
    assert (ds.dropped, ds.clipped) == (0, 0)  # edge boxes overshoot by <= 0.0003 px: rounding, not clipping
    assert ds.splits() == ("train", "val") and ds.split_aliases == {"val": "train"}
    assert ds.classes[0] == "person" and ds.samples[0].image == "images/train2017/000000000009.jpg"
    assert seconds < 1.0
    write_detection_dataset(ds, tmp_path / "coco", "coco")
    as_coco = read_detection_dataset(tmp_path / "coco")
    write_detection_dataset(as_coco, tmp_path / "yolo", "yolo")
    assert_same(ds, as_coco)
    assert_same(ds, read_detection_dataset(tmp_path / "yolo"))


def test_raccoon_facts_and_round_trip(tmp_path):
    ds, seconds = _timed_read(require_shared("datasets", "raccoon.zip"))
    assert (ds.format, len(ds.samples), sum(len(s.boxes) for s in ds.samples), ds.classes) == (
        "voc",
        200,
        217,
        ("raccoon",),
    )
    assert (len(ds.select("train").samples), len(ds.select("test").samples)) == (160, 40)
    assert seconds < 1.0
    current = ds
    for fmt in ("coco", "yolo", "voc"):
        write_detection_dataset(current, tmp_path / fmt, fmt)
        current = read_detection_dataset(tmp_path / fmt)
        assert current.format == fmt
        assert_same(ds, current)


# -- zoo data -------------------------------------------------------------------------------------------


@pytest.fixture
def zoo_cli():
    """zoo's root group with `data` added the way the plugin hook adds it, restored afterwards."""
    before = cli.commands.get("data")
    add_commands(cli)
    try:
        yield cli
    finally:
        cli.commands.pop("data", None)
        if before is not None:
            cli.commands["data"] = before


def test_add_commands_adds_the_data_group():
    group = click.Group("root")
    add_commands(group)
    assert set(group.commands["data"].commands) == {"convert", "info"}


def test_cli_convert_and_info(zoo_cli, tmp_path):
    src = make_yolo(tmp_path / "yolo")
    result = CliRunner().invoke(zoo_cli, ["data", "convert", str(src), str(tmp_path / "out"), "--to", "coco"])
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1
    for part in (
        "coco, 4 images (2 without boxes; train 3, val 1)",
        "3 boxes",
        "2 classes",
        "from yolo",
        "(boxes dropped: 1, clipped: 1)",
    ):
        assert part in result.output
    result = CliRunner().invoke(zoo_cli, ["data", "info", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "coco, 4 images (2 without boxes), 3 boxes, 2 classes (2 with boxes)" in result.output
    assert "train:      3 images, 2 boxes, 2 without boxes" in result.output
    assert "val:        1 image, 1 box, 0 without boxes" in result.output
    info = json.loads(CliRunner().invoke(zoo_cli, ["data", "info", str(src), "--json"]).output)
    assert info["splits"]["val"]["images"] == 1 and info["orphan_labels"] == 1 and info["background_images"] == 2


def test_cli_errors_are_one_line(zoo_cli, tmp_path):
    src = make_yolo(tmp_path / "yolo")
    _write(tmp_path / "out/keep.txt", "mine")
    result = CliRunner().invoke(zoo_cli, ["data", "convert", str(src), str(tmp_path / "out"), "--to", "voc"])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "already exists and is not empty" in result.output
    _write(src / "labels/val/d.txt", "9 0.5 0.5 0.1 0.1\n")
    result = CliRunner().invoke(zoo_cli, ["data", "info", str(src)])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "d.txt, line 1" in result.output
    assert not (tmp_path / "out.partial").exists()
