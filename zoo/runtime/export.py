"""Export a model's network as ONNX or as a torch.export ExportedProgram, checked against eager PyTorch.

The task says what is exported (``Task.export_module`` → ``zoo.runtime.tasks.Exportable``): a classifier its
whole network (prepared images in, logits out), a detector its network up to the raw head output, with the
post-processing it leaves out said in one line. One capture serves both formats: ``torch.export.export`` captures
the module once; ``exported-program`` saves that program (``torch.export.save``), ``onnx`` converts it with
torch's ONNX exporter (the torch.export-based one, torch's default since 2.9; it needs ``onnx`` and
``onnxscript``), asking for the opset the user named and refusing a file written at another one.

Every export is checked before it is published: real images (the checkout's ``examples/images``, or the caller's)
go through the task's own ``predict_batch`` and ``prepare``, the written file is loaded back and run
(onnxruntime for ONNX, ``torch.export.load`` for an ExportedProgram) at every batch size the file promises to take,
and the largest absolute difference from the eager module is reported; beyond the tolerance nothing is written.
The file appears by a rename from a temporary folder beside it, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ZooError

if TYPE_CHECKING:
    import torch

__all__ = ["FORMATS", "ExportResult", "export", "exportable_task"]

#: Format name -> the file suffix used when the format is not given.
FORMATS = {"onnx": ".onnx", "exported-program": ".pt2"}
#: The real images an export is checked on when the caller names none (present in a source checkout).
EXAMPLE_IMAGES = Path(__file__).resolve().parents[2] / "examples" / "images"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# The exporter's own chatter (opset conversion attempts, with tracebacks, deprecations): zoo says the outcome.
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx", "onnxscript", "onnx_ir")


@dataclass
class ExportResult:
    """What ``zoo export`` wrote and how it was checked (``--json`` prints :meth:`as_dict`)."""

    model: str
    weights: str | None  # the tag of the weights exported (the card's default unless the name gave one)
    format: str
    path: str
    files: list[str]
    bytes: int
    opset: int | None
    dynamic_batch: bool
    input: dict[str, Any]
    outputs: list[dict[str, Any]]
    leaves_out: str | None
    check: dict[str, Any]
    seconds: float
    versions: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def exportable_task(card: Any) -> Any:
    """The task object for `card`, after checking that its task can export (defines ``export_module``): one that
    cannot is one line naming the verbs it has."""
    from .tasks import task_for

    return task_for(card, "export", "export_module")


def _check_format(format: str | None, path: Path) -> str:
    if format is None:  # from the file's suffix, ONNX otherwise
        return next((name for name, suffix in FORMATS.items() if path.suffix.lower() == suffix), "onnx")
    if format not in FORMATS:
        import difflib

        close = difflib.get_close_matches(str(format), list(FORMATS), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ZooError(f"Unknown export format {format!r}{hint}; use {' or '.join(FORMATS)}.")
    return format


def _check_destination(path: Path) -> None:
    """Refuse, before anything is loaded or exported, a destination that cannot be written: one line."""
    if path.is_dir():
        raise ZooError(f"Cannot write {path}: it is a folder; -o names the file to write.")
    folder = path.parent
    if not folder.is_dir():
        raise ZooError(f"Cannot write {path}: its folder {folder} does not exist.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ZooError(f"Cannot write {path}: its folder {folder} is not writable.")


def _check_onnx_packages(opset: int | None) -> None:
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ZooError(
            f"ONNX export needs the packages onnx and onnxscript (torch's exporter) and onnxruntime (the "
            f"check); missing: {', '.join(missing)}. Install them: pip install {' '.join(missing)}"
        )
    if opset is not None:
        import onnx

        newest = onnx.defs.onnx_opset_version()
        if not 1 <= opset <= newest:
            raise ZooError(
                f"--opset {opset}: the installed onnx {onnx.__version__} knows opsets 1 to {newest}; "
                "torch's exporter writes 18 and later (default: its own choice)."
            )


def _image_files(images: str | Path | list[str | Path] | None) -> list[Path]:
    if images is None:
        if not EXAMPLE_IMAGES.is_dir():
            raise ZooError(
                "No images to check the export on: this installation has no examples/images; name some "
                "with --images PATH (zoo.export(..., images=[...]))."
            )
        images = [EXAMPLE_IMAGES]
    if isinstance(images, (str, Path)):
        images = [images]
    files: list[Path] = []
    for item in map(Path, images):
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif item.is_file():
            files.append(item)
        else:
            raise ZooError(f"Cannot check the export on {item}: no such file or folder.")
    if not files:
        raise ZooError(f"No images to check the export on in {', '.join(map(str, images))}.")
    return files


class _Kept(logging.Handler):
    """Keeps the exceptions the exporters log (e.g. why onnx's opset converter gave up) instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


@contextlib.contextmanager
def _quiet() -> Iterator[_Kept]:
    """Silence the exporters' warnings and log lines for the duration (restored after); what they logged with an
    exception is kept on the handler yielded."""
    kept = _Kept()
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        # torch's loggers carry torch's own handlers: raise their level; onnxscript's (the opset converter) and
        # onnx_ir's log to the root: keep their warnings here instead
        torch_logger = logger.name.startswith("torch")
        logger.setLevel(logging.CRITICAL if torch_logger else logging.WARNING)
        if not torch_logger:
            logger.propagate = False
            logger.addHandler(kept)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield kept
    finally:
        for logger, (level, propagate) in zip(loggers, saved, strict=True):
            if kept in logger.handlers:
                logger.removeHandler(kept)
            logger.setLevel(level)
            logger.propagate = propagate


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    import torch

    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out):
        return tuple(out)
    raise ZooError(f"The exported module returns {type(out).__name__}, not a tensor or a tuple of tensors.")


def _runner(fmt: str, file: Path) -> tuple[Any, str]:
    """A function running the written file on a float batch (-> tuple of tensors), and what runs it."""
    import torch

    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - e.g. an opset this onnxruntime does not implement
            raise ZooError(f"onnxruntime {ort.__version__} cannot load the exported graph: {_first_line(exc)}") from exc
        name = session.get_inputs()[0].name

        def run_onnx(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(torch.from_numpy(y) for y in session.run(None, {name: x.numpy()}))

        return run_onnx, f"onnxruntime {ort.__version__}"
    program = torch.export.load(str(file)).module()

    def run_program(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            return _as_tuple(program(x))

    return run_program, f"torch.export.load (torch {torch.__version__})"


def export(
    name: str,
    path: str | Path,
    format: str | None = None,
    *,
    dynamic_batch: bool = False,
    opset: int | None = None,
    images: str | Path | list[str | Path] | None = None,
    tolerance: float | None = None,
) -> ExportResult:
    """Export model `name`'s network (what its task's ``export_module`` names) to `path`.

    Args:
        format: "onnx" or "exported-program"; default: from the suffix (.pt2: exported-program), else onnx.
        dynamic_batch: the graph takes any batch size (checked at two); otherwise batch 1.
        opset: ONNX only: the opset to write (torch's exporter writes 18 and later natively and converts down
            where onnx's converter can); a file it would write at another opset is refused.
        images: real image files or folders to check the export on (default: the checkout's examples/images).
        tolerance: the largest absolute difference from eager PyTorch accepted (default 1e-3 x the largest
            output magnitude, at least 1e-3).

    Raises:
        ZooError: unknown format or model, a task that does not export, a destination that cannot be written, a
            missing package, an opset refused, a module torch.export cannot capture, a check that fails; nothing
            is written then.
    """
    import torch

    from .._api import load
    from .._registry import get_registry
    from .images import read_image

    started = time.perf_counter()
    path = Path(path)
    fmt = _check_format(format, path)
    if opset is not None and fmt != "onnx":
        raise ZooError(f"--opset applies to ONNX only, not to {fmt}.")
    _check_destination(path)
    resolved = get_registry().resolve(name)
    card = resolved.card
    task = exportable_task(card)
    if fmt == "onnx":
        _check_onnx_packages(opset)
    files = _image_files(images)

    model = load(name, device="cpu").float().eval()
    spec = task.export_module(model)
    from .tasks import Exportable

    if not isinstance(spec, Exportable):
        raise ZooError(f"The {card.task} task's export_module returned {type(spec).__name__}, not an Exportable.")
    module = spec.module.eval()
    batch = task.predict_batch([read_image(f) for f in files], [str(f) for f in files])
    x = task.prepare(batch.images)
    if not isinstance(x, torch.Tensor):
        raise ZooError(f"Model {card.name!r} takes images of varying sizes; 'zoo export' needs a fixed input size.")
    x = x.float().contiguous()
    with torch.no_grad():
        single = [_as_tuple(module(x[i : i + 1])) for i in range(len(x))]
        whole = _as_tuple(module(x)) if dynamic_batch and len(x) > 1 else None
    if len(single[0]) != len(spec.outputs):
        raise ZooError(f"The {card.task} task names {len(spec.outputs)} outputs, the module returns {len(single[0])}.")

    # capture once; both formats come from this program
    example = x[:2] if len(x) > 1 else x[:1].expand(2, *x.shape[1:]).contiguous()
    example = example if dynamic_batch else x[:1]
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    try:
        with _quiet():
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; the user gets one line
        hint = " (try without --dynamic-batch)" if dynamic_batch else ""
        raise ZooError(f"torch.export cannot capture {card.name!r}'s network{hint}: {_first_line(exc)}") from exc

    metadata = {
        "zoo.model": card.name,
        "zoo.task": card.task,
        "zoo.input": spec.input,
        "zoo.outputs": json.dumps(list(spec.outputs)),
        "zoo.labels": json.dumps(list(card.labels)),
    }
    tag = (resolved.tag or card.default_tag) if resolved.variant is not None else None
    if resolved.variant is not None:
        metadata["zoo.weights"] = f"{tag} sha256:{resolved.variant.sha256 or resolved.variant.sha256_prefix}"
    if spec.leaves_out:
        metadata["zoo.leaves_out"] = spec.leaves_out
    versions: dict[str, str] = {"torch": torch.__version__}
    written_opset = None
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        target = staging / path.name
        if fmt == "onnx":
            import onnx
            import onnxscript

            versions.update(onnx=onnx.__version__, onnxscript=onnxscript.__version__)
            try:
                with _quiet() as log:
                    onnx_program = torch.onnx.export(
                        program,
                        (example,),
                        dynamo=True,
                        opset_version=opset,
                        input_names=["images"],
                        output_names=list(spec.outputs),
                        verbose=False,
                    )
            except Exception as exc:  # noqa: BLE001
                raise ZooError(
                    f"torch.onnx cannot convert {card.name!r}'s network"
                    f"{f' at opset {opset}' if opset else ''}: {_first_line(exc)}"
                ) from exc
            assert onnx_program is not None  # dynamo=True always returns the program
            written_opset = int(onnx_program.model.opset_imports.get("", 0))
            if opset is not None and written_opset != opset:
                why = f": {_first_line(log.errors[-1])}" if log.errors else ""
                raise ZooError(
                    f"--opset {opset}: torch's exporter cannot write {card.name!r} at opset {opset} "
                    f"(it writes {written_opset}; onnx's opset converter failed{why}); use --opset "
                    f"{written_opset} or later, or leave --opset out."
                )
            onnx_program.model.metadata_props.update(metadata)
        try:
            if fmt == "onnx":
                assert onnx_program is not None  # set above for onnx
                with _quiet():
                    onnx_program.save(target, external_data=False)  # one file (torch moves >2 GB weights out)
            else:
                program.example_inputs = None  # else torch.export.save stores the check's first image in the file
                torch.export.save(program, target, extra_files={"zoo.json": json.dumps(metadata)})
        except OSError as exc:  # a full disk, a quota
            raise ZooError(f"Cannot write {path}: {exc.strerror or exc}.") from exc

        # the check: the written file, loaded back, against the eager module
        try:
            run, runtime = _runner(fmt, target)
        except ZooError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ZooError(f"The exported file cannot be loaded back: {_first_line(exc)}") from exc
        if fmt == "onnx":
            import onnxruntime

            versions["onnxruntime"] = onnxruntime.__version__
        pairs = [(x[i : i + 1], single[i]) for i in range(len(x))]
        if whole is not None:
            pairs.insert(0, (x, whole))
        elif dynamic_batch:  # one image: still run a batch of two through the dynamic graph
            pairs.insert(0, (example, tuple(torch.cat([t, t]) for t in single[0])))
        difference, magnitude = 0.0, 0.0
        try:
            with _quiet():
                for inputs, expected in pairs:
                    got = run(inputs)
                    for g, e in zip(got, expected, strict=True):
                        if tuple(g.shape) != tuple(e.shape):
                            raise ZooError(
                                f"The exported graph returned shape {tuple(g.shape)} where eager PyTorch "
                                f"returns {tuple(e.shape)}."
                            )
                        difference = max(difference, float((g.float() - e.float()).abs().max()))
                        magnitude = max(magnitude, float(e.float().abs().max()))
        except ZooError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ZooError(f"The exported file does not run in {runtime}: {_first_line(exc)}") from exc
        allowed = tolerance if tolerance is not None else 1e-3 * max(1.0, magnitude)
        if not difference <= allowed:  # NaN fails too
            raise ZooError(
                f"The export differs from eager PyTorch by {difference:.3g} (tolerance {allowed:.3g}) on "
                f"{len(files)} images; nothing written."
            )

        # publish: weights beside the graph (only for >2 GB ONNX models) first, the named file last
        produced = sorted(staging.iterdir(), key=lambda p: p.name == path.name)
        published = []
        try:
            for item in produced:
                os.replace(item, path.parent / item.name)
                published.append(path.parent / item.name)
        except OSError as exc:
            raise ZooError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    batch_dim: Any = "batch" if dynamic_batch else 1
    return ExportResult(
        model=card.name,
        weights=tag,
        format=fmt,
        path=str(path),
        files=[str(p) for p in published],
        bytes=sum(p.stat().st_size for p in published),
        opset=written_opset,
        dynamic_batch=dynamic_batch,
        input={"name": "images", "shape": [batch_dim, *x.shape[1:]], "dtype": "float32", "expects": spec.input},
        outputs=[
            {"name": n, "shape": [batch_dim, *t.shape[1:]], "dtype": str(t.dtype).removeprefix("torch.")}
            for n, t in zip(spec.outputs, single[0], strict=True)
        ],
        leaves_out=spec.leaves_out,
        check={
            "runtime": runtime,
            "images": [str(f) for f in files],
            "batch_sizes": [len(p[0]) for p in pairs],
            "max_abs_diff": difference,
            "tolerance": allowed,
            "max_abs_output": magnitude,
        },
        seconds=round(time.perf_counter() - started, 2),
        versions=versions,
    )
