"""The diffusion task: sample with a chosen sampler, step count and guidance; measure samples against real images
(every sampling task's FID/KID/judge accuracy, zoo.runtime.generative), also as a sweep over step counts; and
train the denoiser with the runtime's loop (uniform timesteps, the simple MSE objective, class dropout for
classifier-free guidance, EMA by default).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import click
import torch

from zoo._card import ModelCard
from zoo.errors import ZooError
from zoo.runtime.generative import GenerativeTrainData, SamplingTask
from zoo.runtime.sample import Noise
from zoo.runtime.tasks import Batch, unwrap

from .samplers import SAMPLERS, check_options, denoise

__all__ = ["DiffusionTask"]


def _unwrap(model: Any) -> Any:
    return unwrap(model, "scheduler_config", "a zoo_diffusion denoiser")


def _steps_list(value: str | int) -> list[int]:
    """``--steps 50`` or a sweep ``--steps 10,25,50,100``."""
    if isinstance(value, int):
        return [value]
    try:
        steps = [int(part) for part in str(value).split(",") if part.strip()]
    except ValueError:
        raise ZooError(
            f"--steps {value!r}: give a step count (50) or a comma-separated sweep (10,25,50,100)."
        ) from None
    if not steps:
        raise ZooError("--steps is empty: give a step count (50) or a comma-separated sweep (10,25,50,100).")
    return steps


class DiffusionTask(SamplingTask):
    """Task behaviour for denoising diffusion models (the contract: zoo.runtime.tasks.Task)."""

    config_fields = {
        **SamplingTask.config_fields,
        "sampler": (str, None, None),  # the default sampler of `zoo sample` and `zoo eval`
        "steps": (int, 1, None),  # its default step count
        "guidance": (float, 0, None),  # the default classifier-free guidance scale (1: none)
        "class_dropout": (float, 0, 1),  # training: the fraction of labels replaced by "no class"
        "val_sampler": (str, None, None),  # validation during training: sampler, steps, guidance, every N epochs
        "val_steps": (int, 1, None),
        "val_guidance": (float, 0, None),
        "val_every": (int, 1, None),
    }
    #: rows per call of the sampler: each sample costs `steps` network calls, so a 1-image run is padded to 32
    #: images, not 256 (the calls' size stays fixed: the images do not depend on --batch-size)
    sample_batch = 32
    validate_judge = True

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self.default_sampler = self.config.get("sampler", "ddim")
        self.default_steps = int(self.config.get("steps", 50))
        guidance = self.config.get("guidance")
        self.default_guidance = float(guidance) if guidance is not None and self.conditional else None
        self.validate_every = int(self.config.get("val_every", 1))
        if self.default_sampler not in SAMPLERS:
            raise ZooError(
                f"Card {card.name!r}: task_config.sampler must be one of {', '.join(SAMPLERS)}, got "
                f"{self.default_sampler!r}."
            )

    @property
    def timesteps(self) -> int:
        return int(self.card.kwargs.get("timesteps", 1000))

    # -- options ------------------------------------------------------------------------------------
    @classmethod
    def sampling_options(cls, sweep: bool) -> list[click.Option]:
        steps_help = "Denoising steps (default: the card's, e.g. 50)" + (
            "; a comma-separated list (10,25,50,100) measures each: a steps-vs-metric sweep." if sweep else "."
        )
        return [
            click.Option(
                ["--sampler"],
                type=str,
                default=None,
                help="ddpm (ancestral, the full schedule), ddim (any step count) or dpm++ (DPM-Solver++ "
                "2M, 10-25 steps). Default: the card's.",
            ),
            click.Option(["--steps"], type=str if sweep else int, default=None, help=steps_help),
            click.Option(
                ["--guidance"],
                type=float,
                default=None,
                help="Class-conditional models: the classifier-free guidance scale (1: none; 2-4: more "
                "class-typical images). Default: the card's.",
            ),
            click.Option(
                ["--eta"],
                type=float,
                default=None,
                help="DDIM's noise (0: deterministic, the default; 1: as stochastic as DDPM).",
            ),
        ]

    @classmethod
    def options(cls, verb: str) -> list[click.Option]:
        if verb == "eval":
            return cls.eval_options() + cls.sampling_options(sweep=True)
        if verb == "sample":
            return cls.sampling_options(sweep=False)
        return []

    def _resolve(
        self, sampler: str | None, steps: int | None, guidance: float | None, eta: float | None
    ) -> dict[str, Any]:
        """The sampling options with the card's defaults filled in, checked (one line for anything wrong)."""
        if guidance is not None and not self.conditional:
            check_options(self.timesteps, False, sampler or self.default_sampler, steps or 1, guidance, eta)
        resolved: dict[str, Any] = {
            "sampler": sampler or self.default_sampler,
            "steps": self.default_steps if steps is None else steps,
            "guidance": self.default_guidance if guidance is None else guidance,
            "eta": 0.0 if eta is None else eta,
        }
        check_options(
            self.timesteps,
            self.conditional,
            resolved["sampler"],
            resolved["steps"],
            resolved["guidance"],
            resolved["eta"],
        )
        return resolved

    def check_options(
        self,
        sampler: str | None = None,
        steps: str | int | None = None,
        guidance: float | None = None,
        eta: float | None = None,
        **_other: Any,
    ) -> dict[str, Any]:
        """Refuse bad sampling options before the runtime loads the model or reads a dataset (one line); the
        options as they will be used, the card's defaults filled in (what ``zoo sample``'s manifest records)."""
        resolved: dict[str, Any] = {}
        for count in _steps_list(steps) if steps is not None else [None]:
            resolved = self._resolve(sampler, count, guidance, eta)
        return resolved

    def validation_eval_args(self) -> str:
        options = self._validation_options()
        guidance = f" --guidance {options['guidance']:g}" if options["guidance"] is not None else ""
        return f" --sampler {options['sampler']} --steps {options['steps']}{guidance}"

    def _validation_options(self) -> dict[str, Any]:
        guidance = self.config.get("val_guidance", self.config.get("guidance"))
        return self._resolve(
            self.config.get("val_sampler", "dpm++"),
            self.config.get("val_steps", 20),
            None if guidance is None or not self.conditional else float(guidance),
            None,
        )

    # -- sampling -----------------------------------------------------------------------------------
    def sample_steps(
        self,
        sampler: str | None = None,
        steps: int | str | None = None,
        guidance: float | None = None,
        eta: float | None = None,
    ) -> int:
        """Network calls per sample batch (the progress bar's unit)."""
        return int(steps) if isinstance(steps, int) else self.default_steps

    def sample(
        self,
        model: Any,
        noise: Noise,
        labels: torch.Tensor | None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        eta: float | None = None,
        on_step: Any = None,
    ) -> torch.Tensor:
        options = self._resolve(sampler, steps, guidance, eta)
        denoiser = _unwrap(model)
        if labels is not None:
            labels = labels.to(noise.device)
        x = denoise(
            denoiser, noise, labels, options["sampler"], options["steps"], options["guidance"], options["eta"], on_step
        )
        return self.to_unit(x)

    # -- evaluation -----------------------------------------------------------------------------------
    # the sampling options by name where the base class takes **sample_options
    def measure(  # type: ignore[override]
        self,
        model: Any,
        data: Any,
        context: Any,
        samples: int | None = None,
        features: str | None = None,
        judge: str | None = None,
        sample_seed: int = 0,
        validation: bool = False,
        sampler: str | None = None,
        steps: str | int | None = None,
        guidance: float | None = None,
        eta: float | None = None,
    ) -> dict[str, Any]:
        """Part 1's figures for samples drawn with the given sampler, steps and guidance (recorded in the
        summary as ``sampling``); with several step counts, each is measured (``sweep``) and the summary's
        figures are those of the card's default step count if it is in the list, else of the last."""
        import time

        if validation:
            options = self._validation_options()
            summary = super().measure(model, data, context, samples, features, judge, sample_seed, True, **options)
            return summary
        sweep = _steps_list(steps) if steps is not None else [self.default_steps]
        rows = []
        for count in sweep:
            options = self._resolve(sampler, count, guidance, eta)
            start = time.perf_counter()
            figures = super().measure(model, data, context, samples, features, judge, sample_seed, False, **options)
            figures["sampling"] = options
            figures["sampling_seconds"] = round(time.perf_counter() - start, 1)
            rows.append(figures)
        chosen = next((r for r in rows if r["sampling"]["steps"] == self.default_steps), rows[-1])
        summary = dict(chosen)
        if len(rows) > 1:
            space = chosen["features"]
            keys = [f"fid[{space}]", f"kid[{space}]", "precision", "recall", "judge_accuracy"]
            summary["sweep"] = [
                {"steps": r["sampling"]["steps"], **{k: r[k] for k in keys if k in r}, "seconds": r["sampling_seconds"]}
                for r in rows
            ]
        return summary

    def render_eval(self, summary: dict[str, Any]) -> list[str]:
        lines = super().render_eval(summary)
        options = summary.get("sampling")
        if options:
            guidance = "" if options["guidance"] is None else f", guidance {options['guidance']:g}"
            eta = f", eta {options['eta']:g}" if options["sampler"] == "ddim" and options["eta"] else ""
            lines.append(
                f"sampler {options['sampler']}, {options['steps']} steps{guidance}{eta} "
                f"({summary.get('sampling_seconds', 0):.0f} s of sampling and features)"
            )
        sweep = summary.get("sweep")
        if sweep:
            space = summary["features"]
            lines.append(f"sweep over steps ({options['sampler'] if options else ''}):")
            lines.append(f"  {'steps':>6}  {'fid[' + space + ']':>22}  {'judge %':>8}  {'seconds':>8}")
            for row in sweep:
                judge = f"{row['judge_accuracy']:.2f}" if "judge_accuracy" in row else "-"
                lines.append(f"  {row['steps']:>6}  {row[f'fid[{space}]']:>22.3f}  {judge:>8}  {row['seconds']:>8.0f}")
        return lines

    def write_report(self, record: dict[str, Any], directory: Path) -> list[Path]:
        """With a sweep: ``sweep.csv`` (steps vs every figure) and ``sweep.png`` (FID and judge accuracy vs steps)."""
        sweep = record["metrics"].get("sweep")
        if not sweep:
            return []
        from .report import sweep_png

        keys = list(dict.fromkeys(k for row in sweep for k in row))
        table = directory / "sweep.csv"
        tmp = table.with_name(table.name + ".partial")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(sweep)
        os.replace(tmp, table)
        space = record["metrics"]["features"]
        figure = directory / "sweep.png"
        sweep_png(
            sweep,
            f"fid[{space}]",
            figure,
            f"{record['model']}: {record['metrics']['sampling']['sampler']} "
            f"sampling, {record['metrics']['samples']} samples",
        )
        return [table, figure]

    # -- training -----------------------------------------------------------------------------------
    # AdamW at 3e-4 per 128 images, constant after a short warm-up, gradients clipped at 1, as DDPM (Ho et al. 2020,
    # 2e-4, clip 1, 5,000 warm-up steps) with a higher rate for a small network; EMA of the weights on by default.
    recipe_defaults = {
        "batch_size": 128,
        "augment": "flip",
        "optimizer": "adamw",
        "schedule": "constant",
        "weight_decay": 0.0,
        "warmup": 0.01,
        "clip_grad": 1.0,
        "ema": 0.999,
        # the UNet's GroupNorm backward runs ~3x slower in channels_last on a CPU (bf16, 2 threads: 77 vs 25 ms at
        # 64x96x32x32); contiguous trained 51-56 img/s vs 42-48 channels_last, 1 thread, bf16 (docs/architecture.md)
        "channels_last": False,
    }
    base_lr = {"adamw": 3e-4, "adam": 3e-4}

    def train_data(self, source: str | Path, *, config: Any) -> GenerativeTrainData:
        return super().train_data(source, config=config)

    def train_extras(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Uniform timesteps, the noise added to each image, and which labels drop to "no class"."""
        size = tuple(int(s) for s in self.card.input_shape) if self.card.input_shape else (3, 32, 32)
        extras = {
            "t": torch.randint(self.timesteps, (n,), generator=generator),
            "noise": torch.randn((n, *size), generator=generator),
        }
        if self.conditional:
            extras["drop"] = torch.rand(n, generator=generator) < float(self.config.get("class_dropout", 0.1))
        return extras

    def training_step(self, model: Any, x: torch.Tensor, batch: Batch, config: Any, step: Any = None) -> dict[str, Any]:
        """The simple objective: MSE between the network's output at x_t and the noise (or v) that made it."""
        denoiser = _unwrap(model)
        t = batch.extras["t"].to(x.device)
        noise = batch.extras["noise"].to(x.device, x.dtype)
        abar = denoiser.alphas_cumprod[t].view(-1, 1, 1, 1).to(x.dtype)
        x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
        labels = None
        if self.conditional:
            labels = batch.targets.to(x.device)
            labels = torch.where(
                batch.extras["drop"].to(x.device), torch.full_like(labels, denoiser.null_class), labels
            )
        if x.is_contiguous(memory_format=torch.channels_last):
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        with _training_attention(x.device):
            prediction = model(x_t, t, labels).float()
        target = noise if denoiser.prediction == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * x
        loss = torch.nn.functional.mse_loss(prediction, target.float())
        return {"loss": loss}

    def train_metrics(self, sums: dict[str, float], seen: int) -> dict[str, float]:
        return {}


def _training_attention(device: torch.device) -> Any:
    """On a CPU, the UNet's self-attention trains faster through SDPA's math backend than through its flash kernel,
    whose backward is slow there: 5-10% more images/s for the whole ddpm-cifar step (bf16, 2 threads, interleaved
    runs: 116.8-126.1 vs 111.3-115.2 img/s). Sampling keeps the default (no gain measured). GPUs keep theirs."""
    import contextlib

    if device.type != "cpu":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)
