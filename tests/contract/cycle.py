"""One model through every verb its task supports, the way a user drives it: the task contract, end to end.

:func:`run_cycle` takes any installed model (a card whose task some plugin registers), a small labelled dataset in
a format of its task, a few image files and a scratch directory, and checks, through ``zoo``'s public API and its
CLI (``click.testing.CliRunner``, in this process, so plugins registered inline count):

1. ``zoo.load`` gives a module in eval mode, on the CPU.
2. Each of predict / eval / finetune / sample the task does not list in ``verbs`` is refused by the CLI in one
   line that names the verbs it does support (exit 1, no traceback, nothing written), and by the Python API with
   a ``ZooError``; ``zoo predict|eval|sample --help`` list the task's own options (``Task.options``).
3. ``zoo predict --json``: one record per image, in order, naming its image, with fields of the task's own;
   ``-o DIR`` writes the same records to ``DIR/predictions.json``, every file a record lists, and no ``.partial``.
4. ``zoo eval --json --report DIR``: the summary holds the task's headline metric (``Task.headline``), first, as a
   finite number; ``DIR/metrics.json`` holds the same record.
5. ``zoo finetune`` (2 epochs unless ``finetune_options`` say otherwise): a run stopped after the first batch of
   the first epoch (the way a Ctrl-C stops it) and ``--resume``d ends at exactly the weights (``torch.equal``) and
   the validation figures of a straight run; the best epoch follows the headline's direction (ties: the later);
   the new card loads with ``zoo.load(NEW)``, is listed with its figure, and the command its metric note gives
   (``zoo eval NEW --data ... --val-split F --seed S --compare``) reproduces that figure within the task's
   ``tolerance``; ``checkpoint.pt`` reads with ``torch.load(weights_only=True)``.
6. ``zoo sample -o GRID --out-dir DIR --json``: the grid (``make_grid`` geometry), one PNG per sample, the same
   manifest in ``GRID.json``, ``DIR/manifest.json`` and on stdout (model, weights sha256, seed, n, classes, the
   task's option defaults, precision, versions); ``zoo.sample`` gives float32 N x C x H x W in [0, 1] on the
   CPU, the same pixels as the PNGs; the same seed gives the same tensors at batch sizes 1, 7 and 64 (fp32 and
   the default precision) and byte-identical PNGs; sample i does not depend on n; another seed differs. A
   conditional task (``Task.conditional``) draws one class per sample when given none, draws ``--class`` when
   given one (name or index) and refuses an unknown one in one line; an unconditional one refuses ``--class``.
   -n 0, and no -o/--out-dir, are one line each and write nothing.

Nothing in here knows a particular task: what differs between tasks comes from the task class's ``verbs``,
``headline``, ``tolerance`` and ``conditional``. Every step runs on the CPU. The data must give the fine-tuning
run at least two batches per epoch (the run is stopped after the first one); keep it tiny, the cycle trains three
times.

Run it on your own task from a checkout of zoo (``from tests.contract.cycle import run_cycle``) or copy this file
into your plugin's tests: it imports only zoo, torch, safetensors, click and pytest. docs/plugins/tasks.md.
"""

from __future__ import annotations

import json
import math
import shlex
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result

import zoo
import zoo.runtime.finetune as ft
from zoo.errors import ZooError
from zoo.runtime.tasks import VERBS, get_task, task_class

__all__ = ["CycleReport", "run_cycle"]

CHECKED_VERBS = ("predict", "eval", "finetune", "sample")  # the verbs the runtime implements for every task


@dataclass
class CycleReport:
    """What a cycle did: the verbs it exercised, the fine-tuned model's name and seconds per step."""

    model: str
    task: str
    verbs: tuple[str, ...]
    new_model: str | None = None
    validation: list[float] = field(default_factory=list)  # the headline on the validation images, per epoch
    seconds: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        figures = f"; val {self.validation}" if self.validation else ""
        return f"{self.model} ({self.task}; {', '.join(self.verbs)}): {steps}{figures}"


def run_cycle(
    model: str,
    data: Path,
    images: Sequence[Path],
    workdir: Path,
    *,
    finetune_options: dict[str, Any] | None = None,
    new_name: str | None = None,
) -> CycleReport:
    """Drive `model` through every verb its task supports and check the task contract (module docstring).

    Args:
        model: an installed model's name (its card's task must be registered by a plugin).
        data: a small labelled dataset in a format of the model's task (eval and finetune read it).
        images: a few image files to predict on (distinct file names).
        workdir: an empty scratch directory.
        finetune_options: recipe fields for ``zoo finetune`` (``zoo.runtime.finetune.FinetuneConfig``), e.g.
            ``{"batch_size": 4, "val_split": 0.25}``; ``epochs`` defaults to 2.
        new_name: the fine-tuned model's name (default: ``<model>-tuned``).

    Returns:
        A :class:`CycleReport`; every check is an ``assert`` and fails the calling test.
    """
    card = zoo.card(model)
    cls = task_class(card.task)
    verbs = frozenset(cls.verbs)
    metric, higher = get_task(card).headline  # the task object's: it may name it per card (fid[resnet56-cifar])
    assert verbs <= set(VERBS), f"{cls.__name__}.verbs {sorted(verbs)} has verbs the runtime does not know ({VERBS})"
    assert isinstance(metric, str) and isinstance(higher, bool), f"{cls.__name__}.headline must be (str, bool)"
    assert isinstance(cls.tolerance, (int, float)) and cls.tolerance >= 0, f"{cls.__name__}.tolerance must be >= 0"
    report = CycleReport(model, card.task, tuple(v for v in VERBS if v in verbs))
    workdir.mkdir(parents=True, exist_ok=True)

    with _timed(report, "load"):
        net = zoo.load(model, device="cpu")
        assert isinstance(net, torch.nn.Module), f"zoo.load({model!r}) gave a {type(net).__name__}"
        assert not any(m.training for m in net.modules()), f"zoo.load({model!r}) left modules in training mode"
        assert {t.device.type for t in [*net.parameters(), *net.buffers()]} <= {"cpu"}, "zoo.load(device='cpu')"

    with _timed(report, "refusals, help"):
        for verb in CHECKED_VERBS:
            if verb not in verbs:
                _check_refusal(model, verb, verbs, data, images, workdir)
        for verb in ("predict", "eval", "sample"):  # --help lists the options of every installed task
            if verb in verbs:
                text = _succeeds(verb, "--help").stdout
                missing = [o.opts[0] for o in cls.options(verb) if o.opts[0] not in text]
                assert not missing, f"zoo {verb} --help does not list {card.task}'s options {missing}"
    if "predict" in verbs:
        with _timed(report, "predict"):
            _check_predict(model, images, workdir / "predictions")
    if "eval" in verbs:
        with _timed(report, "eval"):
            _check_eval(model, data, workdir / "eval-report", card.task, metric, higher)
    if "sample" in verbs:
        with _timed(report, "sample"):
            _check_sample(model, cls, workdir / "samples")
    if "finetune" in verbs:
        report.new_model = new_name or f"{card.name}-tuned"
        _check_finetune(model, data, workdir, report, dict(finetune_options or {}), cls)
    return report


# -- the CLI, as a user runs it ------------------------------------------------------------------------------


def zoo_cli(*args: Any) -> Result:
    """``zoo ARGS...`` in this process (plugins registered inline are seen), its output and exit code captured."""
    from zoo.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def _explain(result: Result) -> str:
    text = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        text += "".join(traceback.format_exception(*result.exc_info))
    return text


def _succeeds(*args: Any, code: int = 0) -> Result:
    result = zoo_cli(*args)
    assert result.exit_code == code, (
        f"zoo {' '.join(map(str, args))} exited {result.exit_code}, not {code}:\n{_explain(result)}"
    )
    return result


def _partials(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.partial")) if directory.exists() else []


class _timed:
    def __init__(self, report: CycleReport, step: str) -> None:
        self.report, self.step = report, step

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.report.seconds[self.step] = round(time.perf_counter() - self.start, 2)


# -- the steps ----------------------------------------------------------------------------------------------


def _check_refusal(
    model: str, verb: str, verbs: frozenset[str], data: Path, images: Sequence[Path], workdir: Path
) -> None:
    """A verb the task does not support: one line naming the supported ones, exit 1, no traceback, nothing
    written; and a ZooError from the Python API."""
    from zoo.runtime.evaluate import evaluate
    from zoo.runtime.predict import predict

    out = workdir / f"refused-{verb}"
    args = {
        "predict": ["predict", model, *images, "-o", out],
        "eval": ["eval", model, "--data", data, "--report", out],
        "finetune": ["finetune", model, "--data", data, "--out", out],
        "sample": ["sample", model, "-n", 2, "-o", out],
    }[verb]
    result = zoo_cli(*args, "--device", "cpu")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (
        f"zoo {verb} on {model!r}, whose task supports {sorted(verbs)}: exit {result.exit_code}\n{_explain(result)}"
    )
    assert len(lines) == 1 and "Traceback" not in result.output, f"not one line:\n{result.output}"
    assert f"'zoo {verb}'" in lines[0], lines[0]
    for other in VERBS:
        if other in verbs:
            assert f"'zoo {other}'" in lines[0], f"the refusal does not name supported 'zoo {other}': {lines[0]}"
        elif other != verb:
            assert f"'zoo {other}'" not in lines[0], f"the refusal names unsupported 'zoo {other}': {lines[0]}"
    assert not out.exists(), f"a refused zoo {verb} wrote {out}"
    call = {
        "predict": lambda: predict(model, list(images), device="cpu"),
        "eval": lambda: evaluate(model, data, device="cpu", show_progress=False),
        "finetune": lambda: ft.finetune(model, data, out, device="cpu", show_progress=False),
        "sample": lambda: zoo.sample(model, 2, device="cpu"),
    }[verb]
    with pytest.raises(ZooError, match=f"'zoo {verb}'"):
        call()
    assert not out.exists(), f"a refused {verb}() wrote {out}"


def _check_predict(model: str, images: Sequence[Path], out: Path) -> None:
    result = _succeeds("predict", model, *images, "--json", "--device", "cpu")
    records = json.loads(result.stdout)
    assert isinstance(records, list) and len(records) == len(images), f"{len(images)} images: {result.stdout[:500]}"
    for record, image in zip(records, images, strict=True):
        assert record["image"] == str(image), f"records out of order: {record['image']} for {image}"
        assert "error" not in record, record
        assert set(record) - {"image", "files"}, f"a record with no fields of the task's: {record}"
    result = _succeeds("predict", model, *images, "-o", out, "--device", "cpu")
    saved = json.loads((out / "predictions.json").read_text())
    assert [{k: v for k, v in r.items() if k != "files"} for r in saved] == records, "predictions.json != --json"
    for record in saved:
        for name in record.get("files", []):
            assert Path(name).is_file() and Path(name).resolve().is_relative_to(out.resolve()), name
    assert not _partials(out), _partials(out)
    lines = result.stdout.splitlines()
    for image in images:
        assert any(line.startswith(f"{image}: ") for line in lines), f"no line for {image}:\n{result.stdout}"


def _check_eval(model: str, data: Path, out: Path, task: str, metric: str, higher: bool) -> dict[str, Any]:
    result = _succeeds("eval", model, "--data", data, "--json", "--report", out, "--device", "cpu")
    record = json.loads(result.stdout)
    summary = record["metrics"]
    assert metric in summary, f"the summary has no headline key {metric!r}: {sorted(summary)}"
    value = summary[metric]
    assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), (metric, value)
    assert next(iter(summary)) == metric, f"the headline metric comes first in the summary: {list(summary)[:3]}"
    assert record["headline"] == {"metric": metric, "higher_is_better": higher}, record["headline"]
    assert record["task"] == task and record["images"] > 0, (record["task"], record["images"])
    assert json.loads((out / "metrics.json").read_text()) == {k: v for k, v in record.items() if k != "report"}
    assert all(Path(p).is_file() for p in record["report"]), record["report"]
    assert not _partials(out), _partials(out)
    return record


def _one_line_error(*args: Any) -> str:
    """``zoo ARGS...`` must fail with one line on stderr, exit 1, no traceback; returns that line."""
    result = zoo_cli(*args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (
        f"zoo {' '.join(map(str, args))}: exit {result.exit_code}, not 1\n{_explain(result)}"
    )
    assert len(lines) == 1 and "Traceback" not in result.output, f"not one line:\n{result.output}"
    return lines[0]


def _check_sample(model: str, cls: type, out: Path) -> None:
    from zoo.runtime.images import read_image
    from zoo.runtime.sample import to_uint8

    card = zoo.card(model)
    conditional = bool(getattr(cls, "conditional", False))
    n, seed, nrow = 5, 3, 4
    out.mkdir(parents=True)
    grid, each = out / "grid.png", out / "each"
    result = _succeeds(
        "sample",
        model,
        "-n",
        n,
        "--seed",
        seed,
        "-o",
        grid,
        "--out-dir",
        each,
        "--nrow",
        nrow,
        "--device",
        "cpu",
        "--json",
    )
    manifest = json.loads(result.stdout)
    assert json.loads((out / "grid.png.json").read_text()) == manifest, "GRID.json != the manifest --json printed"
    assert json.loads((each / "manifest.json").read_text()) == manifest, "DIR/manifest.json != --json's manifest"
    assert (manifest["model"], manifest["seed"], manifest["n"]) == (card.qualified_name, seed, n), manifest
    assert manifest["sample_seeds"] == "blake2b(seed:index)" and manifest["device"] == "cpu", manifest
    assert manifest["precision"] in ("fp32", "bf16") and manifest["torch"] == torch.__version__, manifest
    assert manifest["zoo"] == zoo.__version__ and manifest["created"], manifest
    variant = card.variant()
    if variant is None:
        assert manifest["weights"] is None, manifest["weights"]
    else:
        assert manifest["weights"]["variant"] == variant.tag, manifest["weights"]
        assert variant.sha256 is None or manifest["weights"]["sha256"] == variant.sha256, manifest["weights"]
    defaults = {o.name: o.default for o in cls.options("sample")}
    if hasattr(cls, "check_options"):  # the options as used: the card's defaults filled in
        defaults = cls(card).check_options(**defaults) or defaults
    assert manifest["options"] == defaults, f"the manifest's task options {manifest['options']}, not {defaults}"
    if conditional:
        assert len(manifest["labels"]) == n and set(manifest["labels"]) <= set(card.labels), manifest["labels"]
        assert "labels_drawn" in manifest, "classes drawn when none were given: the manifest must say how"
    else:
        assert manifest["labels"] is None and "labels_drawn" not in manifest, manifest

    files = sorted(each.glob("*.png"))
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(n)], [f.name for f in files]
    pngs = [read_image(f) for f in files]
    precision = manifest["precision"]
    images = zoo.sample(model, n, seed, manifest["labels"], device="cpu", precision=precision)
    assert isinstance(images, torch.Tensor) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert images.ndim == 4 and len(images) == n and 0 <= float(images.min()) <= float(images.max()) <= 1
    rgb = [to_uint8(image).expand(3, -1, -1) for image in images]  # zoo decodes every PNG to RGB
    assert all(torch.equal(png, image) for png, image in zip(pngs, rgb, strict=True)), (
        "the PNGs are not zoo.sample's images (same model, seed, classes, precision)"
    )
    h, w = images.shape[2:]
    drawn = read_image(grid)
    assert tuple(drawn.shape) == (3, -(-n // nrow) * (h + 2) + 2, nrow * (w + 2) + 2), (
        f"grid {tuple(drawn.shape)} for {n} images of {h}x{w}, {nrow} a row, 2 px apart"
    )
    assert torch.equal(drawn[:, 2 : 2 + h, 2 : 2 + w], rgb[0]), "the grid's first cell is not sample 0"
    assert torch.equal(drawn[:, 2 : 2 + h, w + 4 : 2 * w + 4], rgb[1]), "the grid's second cell is not sample 1"

    # the same seed, the same pixels, whatever the batch size (and sample i whatever n)
    labels = manifest["labels"]
    for p in ("fp32", precision):
        runs = {b: zoo.sample(model, n, seed, labels, batch_size=b, device="cpu", precision=p) for b in (1, 7, 64)}
        for b, run in runs.items():
            assert torch.equal(run, runs[64]), (
                f"{p}, batch size {b} vs 64: max difference {float((run - runs[64]).abs().max()):g}"
            )
    if not conditional or labels is not None:
        first = zoo.sample(model, 2, seed, None if labels is None else labels[:2], device="cpu", precision=precision)
        assert torch.equal(first, images[:2]), "samples 0-1 of a run with n=2 differ from those of n=5"
    other = zoo.sample(model, n, seed + 1, labels, device="cpu", precision=precision)
    assert not torch.equal(other, images), f"seeds {seed} and {seed + 1} gave the same images"
    again = out / "again"
    _succeeds("sample", model, "-n", n, "--seed", seed, "--out-dir", again, "--batch-size", 1, "--device", "cpu")
    differ = [f.name for f in files if (again / f.name).read_bytes() != f.read_bytes()]
    assert not differ, f"the same seed at --batch-size 1 wrote other PNGs: {differ}"

    # classes
    if conditional:
        last = card.labels[-1]
        record = json.loads(
            _succeeds(
                "sample", model, "-n", 3, "--class", last, "-o", out / "one-class.png", "--device", "cpu", "--json"
            ).stdout
        )
        assert record["labels"] == [last] * 3 and "labels_drawn" not in record, record
        record = json.loads(
            _succeeds(
                "sample",
                model,
                "-n",
                2,
                "--class",
                0,
                "--class",
                last,
                "-o",
                out / "two-classes.png",
                "--device",
                "cpu",
                "--json",
            ).stdout
        )
        assert record["labels"] == [card.labels[0], last], record
        line = _one_line_error("sample", model, "-n", 2, "--class", "no-such-class", "-o", out / "x.png")
        assert f"Unknown class 'no-such-class' for model {card.name!r}; its classes: {card.labels[0]}" in line, line
    else:
        line = _one_line_error("sample", model, "-n", 2, "--class", "cat", "-o", out / "x.png")
        assert f"{card.name!r} is unconditional: it takes no --class" in line, line
    line = _one_line_error("sample", model, "-n", 0, "-o", out / "x.png", "--device", "cpu")
    assert "at least 1" in line, line
    line = _one_line_error("sample", model, "-n", 2, "--device", "cpu")
    assert "-o" in line and "--out-dir" in line, line
    assert not (out / "x.png").exists() and not (out / "x.png.json").exists()
    assert not list(out.rglob("*.partial")), list(out.rglob("*.partial"))


class _StopAfterFirstBatch(ft.StopRequest):
    """A stop request that is already there when the loop first looks (after its first batch), as if Ctrl-C had
    been pressed during it; asked again, there is none."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    @property
    def requested(self) -> bool:
        self.asked += 1
        return self.asked == 1

    @requested.setter
    def requested(self, value: bool) -> None:
        pass


def _recipe_args(options: dict[str, Any]) -> list[str]:
    """Recipe fields as ``zoo finetune`` options (the CLI generates them from the same dataclass)."""
    from zoo.runtime.train.recipe import recipe_fields

    specs = {spec.name: spec for spec in recipe_fields()}
    args: list[str] = []
    for key, value in options.items():
        if key not in specs:
            raise ValueError(f"finetune_options: {key!r} is not a recipe field ({', '.join(specs)})")
        spec = specs[key]
        flag = spec.metadata.get("flag") or "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if value != spec.default:
                args.append(flag)
        elif value is not None:
            args += [flag, str(value)]
    return args


def _check_finetune(
    model: str, data: Path, workdir: Path, report: CycleReport, options: dict[str, Any], cls: type
) -> None:
    from safetensors.torch import load_file

    metric, higher = get_task(zoo.card(model)).headline
    new = report.new_model
    assert new is not None
    options.setdefault("epochs", 2)
    config = ft.FinetuneConfig(**options)

    with _timed(report, "finetune straight"):
        straight = ft.finetune(
            model, data, workdir / f"{new}-straight", config=config, device="cpu", show_progress=False, register=False
        )
    assert not straight.interrupted and [row["epoch"] for row in straight.history] == list(range(1, config.epochs + 1))
    key = f"val_{metric}"
    values = report.validation = [row[key] for row in straight.history]
    best = max(values) if higher else min(values)
    best_epoch = max(i for i, v in enumerate(values, start=1) if v == best)  # a tie goes to the later epoch
    assert (straight.best_epoch, straight.best_value, straight.metric) == (best_epoch, best, metric), (
        f"best epoch: {metric} per epoch {values}, {'higher' if higher else 'lower'} is better, so epoch "
        f"{best_epoch} ({best}); the run chose epoch {straight.best_epoch} ({straight.best_value})"
    )

    out = workdir / new
    args = ["finetune", model, "--data", data, "--out", out, *_recipe_args(options), "--device", "cpu"]
    with _timed(report, "finetune stopped"), pytest.MonkeyPatch.context() as patch:
        patch.setattr(ft, "StopRequest", _StopAfterFirstBatch)
        stopped = _succeeds(*args, code=130)  # asked to stop: not an error, the shell's "interrupted"
    assert "--resume" in stopped.stderr, stopped.output
    checkpoint = out / "checkpoint.pt"
    position = json.loads(torch.load(checkpoint, map_location="cpu", weights_only=True)["position"])
    assert (position["epoch"], position["step"]) == (0, 1), (
        f"stopped at {position}, not after the first batch of the first epoch (give the run >= 2 batches an epoch)"
    )
    assert not (out / f"{new}.safetensors").exists() and new not in zoo.list_models()
    assert not _partials(out), _partials(out)

    with _timed(report, "finetune resumed"):
        _succeeds(*args, "--resume")
    a, b = load_file(str(straight.weights)), load_file(str(out / f"{new}.safetensors"))
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    differ = {k: float((a[k].double() - b[k].double()).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert not differ, f"a run stopped and resumed ends at other weights than a straight run: {differ}"
    history = json.loads((out / "metrics.json").read_text())
    assert [row[key] for row in history] == values, f"{key} resumed {[r[key] for r in history]}, straight {values}"
    assert not _partials(out) and not _partials(workdir / f"{new}-straight")

    with _timed(report, "new card"):
        _check_new_card(model, new, b, metric, best, cls.tolerance, out, config.epochs, "eval" in cls.verbs)


def _check_new_card(
    model: str,
    new: str,
    weights: dict[str, torch.Tensor],
    metric: str,
    best: float,
    tolerance: float,
    out: Path,
    epochs: int,
    can_eval: bool,
) -> None:
    import hashlib

    card = zoo.card(new)
    assert card.plugin == "user" and card.task == zoo.card(model).task, (card.plugin, card.task)
    variant = card.variant()
    assert (
        variant is not None and variant.sha256 == hashlib.sha256((out / f"{new}.safetensors").read_bytes()).hexdigest()
    )
    figures = [m for m in variant.metrics if m.name == metric]
    assert len(figures) == 1, f"the card has {len(figures)} {metric!r} figures: {variant.metrics}"
    figure = figures[0]
    assert (figure.source, figure.split, figure.value) == ("measured", "val", round(best, 4)), figure
    listed = json.loads(_succeeds("list", new, "--json").stdout)
    assert [(r["name"], r["metric"]["name"]) for r in listed] == [(new, metric)], listed

    loaded = zoo.load(new, device="cpu")
    assert not loaded.training
    state = loaded.state_dict()
    assert all(torch.equal(state[k].to(v.dtype), v) for k, v in weights.items()), "zoo.load(NEW) != its weights"

    marker = "Measure again: "
    assert figure.note and marker in figure.note, f"the card's note gives no command to measure again: {figure.note}"
    command = shlex.split(figure.note.split(marker, 1)[1])
    assert command[:3] == ["zoo", "eval", new] and "--compare" in command, command
    if can_eval:
        record = json.loads(_succeeds(*command[1:], "--json", "--device", "cpu").stdout)
        verdict = record["compare"]
        assert (verdict["metric"], verdict["card"], verdict["card_source"]) == (metric, figure.value, "measured")
        assert verdict["tolerance"] == tolerance and verdict["reproduces"], (
            f"{' '.join(command)}: measured {verdict['measured']}, card {verdict['card']} (tolerance {tolerance})"
        )
        assert abs(record["metrics"][metric] - best) <= tolerance, (record["metrics"][metric], best)

    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert json.loads(state["position"])["epoch"] == epochs and set(state["model"]) >= set(weights), sorted(state)
