"""The Gaussian diffusion process of DDPM, and how a model's output is read.

Ho et al. 2020 ("DDPM"), Nichol & Dhariwal 2021 ("improved DDPM"), Salimans
& Ho 2022 (v-prediction). Conventions, fixed by DESIGN.md:

- t runs 0..T-1; t = 0 is the first, least noisy step;
- abar = cumprod(1 - betas) and x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps;
- v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0.

Every table is float64 (products over 1000 steps lose precision in float32);
each result comes back in the dtype of the tensor it was computed for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.errors import WorkbenchError

PREDICTIONS = ("eps", "x0", "v")
VARIANCES = ("fixed_small", "fixed_large", "learned_range")


@dataclass
class ModelPrediction:
    """What the model says about x_{t-1}: p(x_{t-1} | x_t) = N(mean, variance), plus its x0 and eps."""

    mean: torch.Tensor
    variance: torch.Tensor
    log_variance: torch.Tensor
    pred_x0: torch.Tensor
    pred_eps: torch.Tensor


def check_betas(betas: object, scheduler_name: str, provider: object, timesteps: int | None = None) -> torch.Tensor:
    """What a scheduler's `betas()` returned, checked where it enters the engine: a 1-D tensor of
    `timesteps` finite values in (0, 1), as float64. Anything else is a WorkbenchError naming the
    scheduler and the plugin that provided it (`provider`), and what is wrong.

    beta = 1 is refused: it destroys the signal in one step, so the likelihood is infinite (and
    `nll` NaN); schedules that reach the end clip below it (cosine: 0.999).
    """
    where = f"scheduler '{scheduler_name}' (from plugin {provider})"
    try:
        values = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise WorkbenchError(f"{where}: betas() returned {type(betas).__name__}, not a tensor of numbers ({exc})") from None
    if values.ndim != 1:
        raise WorkbenchError(f"{where}: betas() returned shape {list(values.shape)}; a schedule is 1-D, one beta per timestep")
    if timesteps is not None and len(values) != timesteps:
        raise WorkbenchError(f"{where}: betas() returned {len(values)} betas for timesteps = {timesteps}")
    if len(values) == 0:
        raise WorkbenchError(f"{where}: betas() returned no betas")
    finite = torch.isfinite(values)
    if not finite.all():
        t = int((~finite).nonzero()[0])
        raise WorkbenchError(f"{where}: betas() returned {values[t].item()} at t = {t}; every beta must be a finite number")
    outside = (values <= 0) | (values >= 1)
    if outside.any():
        t = int(outside.nonzero()[0])
        raise WorkbenchError(
            f"{where}: betas() returned {values[t].item()} at t = {t}; betas must lie in (0, 1) "
            "(beta = 1 destroys the signal in one step and makes the likelihood infinite)"
        )
    return values


class Diffusion:
    """The forward process q(x_t | x0), its posterior q(x_{t-1} | x_t, x0), and the model's reverse step."""

    def __init__(self, betas: torch.Tensor, prediction: str = "eps", variance: str = "fixed_small") -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, not {prediction!r}")
        if variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, not {variance!r}")
        betas = torch.as_tensor(betas, dtype=torch.float64).cpu()
        if betas.ndim != 1 or len(betas) < 1:
            raise ValueError("betas must be a 1-D tensor with at least one step")
        if not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must lie in (0, 1]")
        self.prediction = prediction
        self.variance = variance
        self.num_timesteps = len(betas)

        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()

        # q(x_{t-1} | x_t, x0) = N(coef1 * x0 + coef2 * x_t, posterior_variance)   (DDPM eq. 6-7)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The variance is 0 at t = 0; its log is clipped to the value at t = 1 (improved DDPM).
        clipped = self.posterior_variance.clone()
        clipped[0] = self.posterior_variance[1] if self.num_timesteps > 1 else self.betas[0]
        self.posterior_log_variance_clipped = clipped.log()
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1.0 - self.alphas_cumprod)

        # fixed_large: sigma_t^2 = beta_t, with t = 0 set to the posterior variance at t = 1 so that
        # the decoder's log-likelihood stays finite (improved-diffusion's convention).
        large = betas.clone()
        large[0] = clipped[0]
        self._fixed_large_variance = large
        self._on_device: dict[torch.device, dict[str, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return f"Diffusion(T={self.num_timesteps}, prediction={self.prediction!r}, variance={self.variance!r})"

    @property
    def device_tables(self) -> dict[torch.device, dict[str, torch.Tensor]]:
        """The float64 tables copied to each device so far, by name: each is copied once and then reused."""
        return {device: dict(tables) for device, tables in self._on_device.items()}

    # --- reading the float64 tables at step t ---------------------------------

    def _at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table `name` at steps t [B], shaped to broadcast against `like` and in its dtype."""
        tables = self._on_device.get(like.device)
        if tables is None:
            tables = self._on_device[like.device] = {}
        table = tables.get(name)
        if table is None:
            table = tables[name] = getattr(self, name).to(like.device)
        values = table[t].to(like.dtype)
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio abar_t / (1 - abar_t), float64 [B]."""
        abar = self.alphas_cumprod.to(t.device)[t]
        return abar / (1.0 - abar)

    # --- the forward process --------------------------------------------------

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_t | x0) (DDPM eq. 4)."""
        mean = self._at("sqrt_alphas_cumprod", t, x0) * x0
        # Squared from the float64 table rather than 1 - abar in x0's dtype: near t = 0, abar is
        # close to 1 and the subtraction would lose most of float32's digits.
        variance = self._at("sqrt_one_minus_alphas_cumprod", t, x0) ** 2
        return mean, variance.expand_as(x0)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x0) with the given noise: sqrt(abar) x0 + sqrt(1 - abar) eps."""
        return self._at("sqrt_alphas_cumprod", t, x0) * x0 + self._at("sqrt_one_minus_alphas_cumprod", t, x0) * noise

    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x0) (DDPM eq. 6-7)."""
        mean = self._at("posterior_mean_coef1", t, x_t) * x0 + self._at("posterior_mean_coef2", t, x_t) * x_t
        variance = self._at("posterior_variance", t, x_t).expand_as(x_t)
        log_variance = self._at("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    # --- conversions between what a model may predict --------------------------

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)."""
        return (x_t - self._at("sqrt_one_minus_alphas_cumprod", t, x_t) * eps) / self._at("sqrt_alphas_cumprod", t, x_t)

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""
        return (x_t - self._at("sqrt_alphas_cumprod", t, x_t) * x0) / self._at("sqrt_one_minus_alphas_cumprod", t, x_t)

    def v_target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022)."""
        return self._at("sqrt_alphas_cumprod", t, x0) * eps - self._at("sqrt_one_minus_alphas_cumprod", t, x0) * x0

    def predict_x0_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """x0 = sqrt(abar) x_t - sqrt(1 - abar) v."""
        return self._at("sqrt_alphas_cumprod", t, x_t) * x_t - self._at("sqrt_one_minus_alphas_cumprod", t, x_t) * v

    def predict_eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """eps = sqrt(1 - abar) x_t + sqrt(abar) v."""
        return self._at("sqrt_one_minus_alphas_cumprod", t, x_t) * x_t + self._at("sqrt_alphas_cumprod", t, x_t) * v

    def training_target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the model should output for x_t = q_sample(x0, t, eps), under this parameterization."""
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        return self.v_target(x0, eps, t)

    def predict_x0_eps(self, prediction: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) from the model's prediction, whichever of eps, x0 or v it is."""
        if self.prediction == "eps":
            return self.predict_x0_from_eps(x_t, t, prediction), prediction
        if self.prediction == "x0":
            return prediction, self.predict_eps_from_x0(x_t, t, prediction)
        return self.predict_x0_from_v(x_t, t, prediction), self.predict_eps_from_v(x_t, t, prediction)

    # --- the model's reverse step p(x_{t-1} | x_t) -----------------------------

    @property
    def learns_variance(self) -> bool:
        return self.variance == "learned_range"

    def split_output(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prediction, variance values in [-1, 1] or None): learned_range splits the channel axis in two."""
        if not self.learns_variance:
            return output, None
        prediction, var_values = output.chunk(2, dim=1)
        return prediction, var_values

    def p_mean_variance(
        self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip_denoised: bool = False
    ) -> ModelPrediction:
        """p(x_{t-1} | x_t) from the raw model output: the posterior around the predicted x0.

        With `clip_denoised`, the predicted x0 is clipped to [-1, 1] (bounded data)
        before the mean is formed; eps is then made consistent with the clipped x0.
        """
        prediction, var_values = self.split_output(output)
        log_variance = self.model_log_variance(var_values, x_t, t)
        pred_x0, pred_eps = self.predict_x0_eps(prediction, x_t, t)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
            pred_eps = self.predict_eps_from_x0(x_t, t, pred_x0)
        mean, _, _ = self.q_posterior(pred_x0, x_t, t)
        return ModelPrediction(mean, log_variance.exp(), log_variance, pred_x0, pred_eps)

    def model_log_variance(self, var_values: torch.Tensor | None, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log sigma_t^2: fixed_small (posterior), fixed_large (beta), or learned_range.

        learned_range (improved DDPM eq. 15): the model's v in [-1, 1] interpolates
        between log beta_t and the clipped log posterior variance.
        """
        if self.variance == "fixed_small":
            return self._at("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        if self.variance == "fixed_large":
            return self._at("_fixed_large_variance", t, x_t).log().expand_as(x_t)
        if var_values is None:
            raise ValueError("learned_range needs the model's variance channels")
        min_log = self._at("posterior_log_variance_clipped", t, x_t)
        max_log = self._at("betas", t, x_t).log()
        frac = (var_values + 1) / 2
        return frac * max_log + (1 - frac) * min_log

    # --- walking a subset of the steps -----------------------------------------

    def respace(self, timesteps: list[int] | torch.Tensor) -> tuple[Diffusion, torch.Tensor]:
        """A process over a subset of steps with the same abar there (improved DDPM sec. 4).

        Returns the new Diffusion and the map from its step index to the
        original t, which the model must still be given.
        """
        steps = torch.as_tensor(timesteps, dtype=torch.long).unique(sorted=True)
        if len(steps) == 0 or steps[0] < 0 or steps[-1] >= self.num_timesteps:
            raise ValueError(f"respace needs at least one step, each in 0..{self.num_timesteps - 1}")
        abar = self.alphas_cumprod[steps]
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        betas = 1.0 - abar / abar_prev
        return Diffusion(betas, self.prediction, self.variance), steps
