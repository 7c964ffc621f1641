"""The GAN task: sample from a generator, and train a generator and a discriminator in turn with the runtime's
loop. Evaluation (FID/KID in a named feature space, judge accuracy, the real-vs-real floor) and the data are every
sampling task's: zoo.runtime.generative.
"""

from __future__ import annotations

from typing import Any

import click
import torch

from zoo._card import ModelCard
from zoo.errors import ZooError
from zoo.runtime.generative import SamplingTask
from zoo.runtime.sample import Noise
from zoo.runtime.tasks import Batch

__all__ = ["GanTask"]


class GanTask(SamplingTask):
    """Task behaviour for GANs (the contract: zoo.runtime.tasks.Task). They sample; they do not predict."""

    config_fields = {
        **SamplingTask.config_fields,
        "loss": (str, None, None),  # hinge | nonsaturating
        "d_steps": (int, 1, 16),  # discriminator steps per generator step
        "truncation": (float, 0, None),  # the default truncation of the latents (none when absent)
    }

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self.z_dim = int(card.kwargs.get("z_dim", 128))
        self.loss_kind = self.config.get("loss", "hinge")
        if self.loss_kind not in ("hinge", "nonsaturating"):
            raise ZooError(
                f"Card {card.name!r}: task_config.loss must be hinge or nonsaturating, got {self.loss_kind!r}."
            )

    # -- options ------------------------------------------------------------------------------------
    @classmethod
    def truncation_option(cls) -> click.Option:
        return click.Option(
            ["--truncation"],
            type=float,
            default=None,
            help="Draw the latents from a normal truncated to [-T, T] (BigGAN's truncation trick): smaller T, "
            "more typical images, less variety. Default: the card's (none: plain normal latents).",
        )

    @classmethod
    def options(cls, verb: str) -> list[click.Option]:
        if verb == "eval":
            return cls.eval_options() + [cls.truncation_option()]
        return [cls.truncation_option()] if verb == "sample" else []

    def check_options(self, truncation: float | None = None, **_other: Any) -> dict[str, Any]:
        """Refuse a bad truncation before a model is built; the options as used (``zoo sample``'s manifest)."""
        if truncation is None:
            truncation = self.config.get("truncation")
        if truncation is not None and not truncation > 0:
            raise ZooError(
                f"--truncation {truncation:g}: give a positive bound, e.g. 1.0 (smaller: more typical images, "
                "less variety); leave it out for plain normal latents."
            )
        return {"truncation": truncation}

    # -- sampling -----------------------------------------------------------------------------------
    def sample(
        self, model: Any, noise: Noise, labels: torch.Tensor | None, truncation: float | None = None, **options: Any
    ) -> torch.Tensor:
        generator = getattr(model, "generator", model)
        bound = self.check_options(truncation)["truncation"]
        z = noise.randn(self.z_dim) if bound is None else noise.truncated_randn(bound, self.z_dim)
        if labels is not None:
            labels = labels.to(z.device)
        return self.to_unit(generator(z, labels))

    # -- evaluation ---------------------------------------------------------------------------------
    def resolve_sampling(self, validation: bool, truncation: float | None = None, **_other: Any) -> dict[str, Any]:
        """The truncation the samples are drawn at (the card's default where none is given, in validation too)."""
        return self.check_options(truncation)

    def render_eval(self, summary: dict[str, Any]) -> list[str]:
        lines = super().render_eval(summary)
        options = summary.get("sampling")
        if options and options.get("truncation") is not None:
            lines.append(f"latents truncated to [-{options['truncation']:g}, {options['truncation']:g}]")
        return lines

    def train_extras(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The latents of the batch's fake images."""
        return {"z": torch.randn(n, self.z_dim, generator=generator)}

    # -- training -----------------------------------------------------------------------------------
    # Adam (betas 0.5, 0.999) at 2e-4 for a batch of 64, constant: SNGAN's setting C (Miyato et al. 2018)
    recipe_defaults = {
        "batch_size": 64,
        "augment": "flip",
        "optimizer": "adam",
        "schedule": "constant",
        "weight_decay": 0.0,
        "warmup": 0.0,
    }
    base_lr = {"adam": 4e-4}  # per 128 images, scaled with the batch like every task's

    def optimizer_groups(self, model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
        # a GAN's two submodules (mypy sees Module.__getattr__'s Tensor | Module)
        return {
            "D": list(model.discriminator.parameters()),  # type: ignore[union-attr]
            "G": list(model.generator.parameters()),  # type: ignore[union-attr]
        }

    def training_step(self, model: Any, x: torch.Tensor, batch: Batch, config: Any, step: Any) -> dict[str, Any]:
        """One discriminator step on real and fake images, then (every ``d_steps``-th batch) one generator step
        on the same fakes. Hinge loss (conditional card) or the non-saturating loss (DCGAN); the fake batch is
        always labelled fake."""
        gan = getattr(model, "module", model)  # DDP wraps it
        G, D = gan.generator, gan.discriminator
        labels = batch.targets.to(x.device) if self.conditional else None
        z = batch.extras["z"].to(x.device)
        fake = G(z, labels)
        real_score, fake_score = D(x, labels), D(fake.detach(), labels)
        if self.loss_kind == "hinge":
            d_loss = torch.relu(1 - real_score).mean() + torch.relu(1 + fake_score).mean()
        else:
            d_loss = torch.nn.functional.softplus(-real_score).mean() + torch.nn.functional.softplus(fake_score).mean()
        step.backward(d_loss.float())
        step.step("D")
        out = {
            "loss": d_loss.detach(),
            "d_real": real_score.detach().float().sum(),
            "d_fake": fake_score.detach().float().sum(),
        }
        if step.batch_index % self.config.get("d_steps", 1) == 0:
            for p in D.parameters():  # the generator's loss needs no gradients for D's weights
                p.requires_grad_(False)
            try:
                score = D(fake, labels)
                g_loss = -score.mean() if self.loss_kind == "hinge" else torch.nn.functional.softplus(-score).mean()
                step.backward(g_loss.float())
            finally:
                for p in D.parameters():
                    p.requires_grad_(True)
            step.step("G")
            out["g_loss"] = g_loss.detach().float() * len(x)
            out["g_batches"] = torch.tensor(float(len(x)))
        return out

    def train_metrics(self, sums: dict[str, float], seen: int) -> dict[str, float]:
        seen = max(seen, 1)
        row = {
            "train_d_real": round(sums.get("d_real", 0.0) / seen, 4),
            "train_d_fake": round(sums.get("d_fake", 0.0) / seen, 4),
        }
        if sums.get("g_batches"):
            row["train_g_loss"] = round(sums["g_loss"] / sums["g_batches"], 4)
        return row
