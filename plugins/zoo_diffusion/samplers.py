"""The reverse process: DDPM ancestral sampling, DDIM (any step count, eta) and DPM-Solver++ (2M), each diffusers'
own scheduler, driven by one loop with classifier-free guidance and per-sample noise.

Every random number comes from the batch's :class:`zoo.runtime.sample.Noise` (one generator per sample): the
starting noise and, for DDPM and DDIM with eta > 0, each step's fresh noise. So sample i depends on its seed alone,
and a rerun gives the same bytes on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from zoo.errors import ZooError

__all__ = ["SAMPLERS", "check_options", "denoise", "make_scheduler"]

#: sampler name -> what it is (``zoo sample --help`` and the error for an unknown name list these)
SAMPLERS = {
    "ddpm": "DDPM ancestral sampling (Ho et al. 2020): stochastic, meant for the full schedule",
    "ddim": "DDIM (Song et al. 2021): deterministic at --eta 0, any step count",
    "dpm++": "DPM-Solver++ 2M (Lu et al. 2022): deterministic, good in 10-25 steps",
}


def check_options(
    model_steps: int, conditional: bool, sampler: str, steps: int, guidance: float | None, eta: float | None
) -> None:
    """One line naming the option and the fix for anything the samplers cannot do."""
    if sampler not in SAMPLERS:
        import difflib

        close = [name for name in SAMPLERS if name.startswith(sampler.lower())] if sampler else []
        close = close or difflib.get_close_matches(sampler.lower(), list(SAMPLERS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ZooError(f"Unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}.{hint}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ZooError(f"--steps {steps}: a sampler takes at least 1 step.")
    if steps > model_steps:
        raise ZooError(
            f"--steps {steps}: the model's schedule has {model_steps} timesteps; {sampler} can take at "
            f"most {model_steps} steps."
        )
    if guidance is not None and not conditional:
        raise ZooError(
            "--guidance applies to class-conditional models (classifier-free guidance); this model is unconditional."
        )
    if guidance is not None and guidance < 0:
        raise ZooError(
            f"--guidance {guidance}: the guidance scale is at least 0 (1: no guidance, 0: "
            "unconditional, above 1: more class-typical)."
        )
    if eta is not None:
        if not 0.0 <= eta <= 1.0:
            raise ZooError(f"--eta {eta}: DDIM's eta lies in [0, 1] (0: deterministic, 1: as stochastic as DDPM).")
        if sampler != "ddim" and eta != 0.0:
            raise ZooError(f"--eta applies to the ddim sampler, not {sampler}.")


def make_scheduler(model: Any, sampler: str, steps: int) -> Any:
    """A fresh diffusers scheduler (they keep per-run state) for `model`'s schedule, set to `steps` steps.

    DDIM and DPM-Solver++ use "trailing" timestep spacing, so the first step starts at the last training
    timestep, where x_T really is pure noise (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps
    are Flawed"); DDPM and DDIM clip the predicted x_0 to the data range [-1, 1], as the DDPM paper's sampler does.
    """
    config = model.scheduler_config()
    if sampler == "ddpm":
        from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

        scheduler = DDPMScheduler(**config, clip_sample=True, variance_type=getattr(model, "variance", "fixed_small"))
    elif sampler == "ddim":
        from diffusers.schedulers.scheduling_ddim import DDIMScheduler

        scheduler = DDIMScheduler(**config, clip_sample=True, timestep_spacing="trailing")
    else:
        from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler

        scheduler = DPMSolverMultistepScheduler(
            **config, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing"
        )
    scheduler.set_timesteps(steps)
    return scheduler


def guided(
    model: Any, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, guidance: float | None
) -> torch.Tensor:
    """The model's prediction, with classifier-free guidance (Ho & Salimans 2022) at scale `guidance`:
    unconditional + scale x (conditional - unconditional), both halves in one call of twice the rows."""
    if labels is None or guidance is None or guidance == 1.0:
        return model(x, t, labels).float()
    null = torch.full_like(labels, model.null_class)
    if guidance == 0.0:
        return model(x, t, null).float()
    both = model(torch.cat([x, x]), t, torch.cat([labels, null])).float()
    conditional, unconditional = both.chunk(2)
    return unconditional + guidance * (conditional - unconditional)


def denoise(
    model: Any,
    noise: Any,
    labels: torch.Tensor | None,
    sampler: str,
    steps: int,
    guidance: float | None = None,
    eta: float = 0.0,
    on_step: Callable[[int], Any] | None = None,
) -> torch.Tensor:
    """Images in the model's data range ([-1, 1]) from pure noise, `steps` steps of `sampler`."""
    scheduler = make_scheduler(model, sampler, steps)
    x = noise.randn(*model.sample_shape) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        prediction = guided(model, scheduler.scale_model_input(x, t), t.to(x.device), labels, guidance)
        if sampler == "ddpm":
            # the step's fresh noise from each sample's own generator (diffusers draws it per generator in a list)
            x = scheduler.step(prediction, t, x, generator=noise.generators).prev_sample
        elif sampler == "ddim" and eta > 0:
            x = scheduler.step(prediction, t, x, eta=eta, variance_noise=noise.randn(*model.sample_shape)).prev_sample
        elif sampler == "ddim":
            x = scheduler.step(prediction, t, x, eta=0.0).prev_sample
        else:
            x = scheduler.step(prediction, t, x).prev_sample
        if on_step is not None:
            on_step(1)
    return x
