"""Timestep sampling: uniform t, and importance sampling from the bound's history (improved DDPM sec. 3.3).

The importance sampler must keep the objective unbiased (weights 1 / (T p_t)),
follow p_t ~ sqrt(E[L_t^2]) of the last ten bound terms per step, and resume
from its state bit for bit.
"""

from __future__ import annotations

import io

import pytest
import torch

from reference import cosine_betas
from test_losses import POINTS, assert_same_mean
from workbench.diffusion import Diffusion
from workbench.exact import GaussianMixtureDenoiser
from workbench.likelihood import nll
from workbench.plugins.losses import MSE, VLB, Hybrid
from workbench.timesteps import HISTORY, ImportanceTimesteps, UniformTimesteps, timestep_sampler

CPU = torch.device("cpu")


def trained_draws(loss, sampler, model, diffusion, x0, generator):
    """What the trainer does with one batch: t and weights from the sampler, the loss, the sampler's update."""
    t, weights = sampler.sample(len(x0), x0.device, generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    terms = loss.terms(model, diffusion, x0, t, noise, weights.to(x0.dtype))
    sampler.update(t, terms.bound)
    return terms.loss


def test_uniform_timesteps_cover_every_step_with_unit_weights():
    t, w = UniformTimesteps(7).sample(5000, CPU, torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and set(t.tolist()) == set(range(7))
    assert torch.equal(w, torch.ones(5000, dtype=torch.float64))


def test_each_loss_asks_for_its_sampler():
    assert isinstance(timestep_sampler(VLB(importance_sampling=True), 10), ImportanceTimesteps)
    for loss in (MSE(), VLB(), Hybrid()):
        assert type(timestep_sampler(loss, 10)) is UniformTimesteps


def test_vlb_with_importance_sampling_stays_unbiased_and_cuts_variance():
    """Gaussian data (continuous), T = 50: uniform and importance-sampled vlb both average to nll;
    p_t ~ sqrt(E[L_t^2]) lowers the variance (here the decoder term, ~ -5 bits x T, dominates it).
    The schedule stops at abar ~ 0.5, so the prior term (~0.2 bits/dim) counts too."""
    diffusion = Diffusion(cosine_betas(100)[:50], "eps", "fixed_large")
    model = GaussianMixtureDenoiser(diffusion, torch.zeros(1, 4, dtype=torch.float64), stds=0.5)
    g = torch.Generator().manual_seed(1)
    x0 = model.sample_data(2000, g).to(torch.float64)
    bound = nll(model, diffusion, x0, levels=None, generator=g)
    uniform = VLB()(model, diffusion, x0.repeat(100, 1), generator=g)
    sampler = ImportanceTimesteps(50)
    trained_draws(VLB(), sampler, model, diffusion, x0, g)  # warm-up: every t gets its 10 losses
    assert sampler.probabilities() is not None
    importance = trained_draws(VLB(), sampler, model, diffusion, x0.repeat(100, 1), g)
    assert_same_mean(uniform, bound)
    assert_same_mean(importance, bound)
    assert float(importance.std()) < 0.6 * float(uniform.std())


def test_importance_probabilities_follow_the_loss_history():
    T = 6
    g = torch.Generator().manual_seed(0)
    history = torch.rand(T, 10, generator=g, dtype=torch.float64) * torch.arange(1, T + 1)[:, None]
    counts = torch.full((T,), 10)
    sampler = ImportanceTimesteps(T)
    sampler.load_state_dict({"loss_history": history, "loss_counts": counts})
    rms = (history**2).mean(dim=1).sqrt()
    expected = 0.999 * rms / rms.sum() + 0.001 / T
    torch.testing.assert_close(sampler.probabilities(), expected, rtol=1e-12, atol=0)

    t, weights = sampler.sample(200_000, CPU, g)
    torch.testing.assert_close(weights, 1 / (T * expected[t]), rtol=1e-12, atol=0)
    frequency = torch.bincount(t, minlength=T) / len(t)
    assert ((frequency - expected).abs() <= 5 * (expected * (1 - expected) / len(t)).sqrt()).all()

    counts[2] = 9  # one step short of its 10 losses: still uniform
    sampler.load_state_dict({"loss_history": history, "loss_counts": counts})
    assert sampler.probabilities() is None
    _, uniform_weights = sampler.sample(100, CPU, g)
    assert torch.equal(uniform_weights, torch.ones(100, dtype=torch.float64))


def test_history_keeps_the_last_ten_bound_terms_of_each_step():
    T = 5
    diffusion = Diffusion(cosine_betas(T), "eps", "fixed_small")
    x0 = torch.zeros(1, 2, dtype=torch.float64)
    noise = torch.ones(1, 2, dtype=torch.float64)
    calls = []

    def model(x_t, t):  # a different output each call, so each L_t differs
        calls.append(None)
        return torch.full_like(x_t, 0.37 * len(calls))

    sampler = ImportanceTimesteps(T)
    terms = []
    for _ in range(12):
        out = VLB().terms(model, diffusion, x0, torch.tensor([3]), noise)
        sampler.update(torch.tensor([3]), out.bound)
        terms.append(float(out.bound))
    state = sampler.state_dict()
    assert state["loss_counts"].tolist() == [0, 0, 0, HISTORY, 0]
    torch.testing.assert_close(state["loss_history"][3], torch.tensor(terms[-10:], dtype=torch.float64))
    assert len(set(terms)) == 12


def test_state_dict_round_trip_resumes_bit_for_bit():
    diffusion = Diffusion(cosine_betas(20), "eps", "fixed_small")
    model = GaussianMixtureDenoiser(diffusion, POINTS)
    x0 = model.sample_data(256, torch.Generator().manual_seed(0)).to(torch.float64)
    loss = VLB(levels=17)
    sampler = ImportanceTimesteps(20)
    assert sampler.state_dict() == {}
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        trained_draws(loss, sampler, model, diffusion, x0, g)
    assert sampler.probabilities() is not None

    buffer = io.BytesIO()
    torch.save(sampler.state_dict(), buffer)
    buffer.seek(0)
    resumed = ImportanceTimesteps(20)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(3):
        assert torch.equal(trained_draws(loss, sampler, model, diffusion, x0, g1),
                           trained_draws(loss, resumed, model, diffusion, x0, g2))
    for key, value in sampler.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key])

    snapshot = sampler.state_dict()
    snapshot["loss_history"].zero_()  # a copy: the sampler's own history is untouched
    assert sampler.state_dict()["loss_history"].abs().sum() > 0
    sampler.load_state_dict({})
    assert sampler.state_dict() == {}
    assert sampler.probabilities() is None


def test_a_history_of_another_length_or_a_loss_without_a_bound_is_refused():
    with pytest.raises(ValueError, match="T = 20"):
        ImportanceTimesteps(20).load_state_dict({"loss_history": torch.zeros(10, HISTORY), "loss_counts": torch.zeros(10)})
    with pytest.raises(ValueError, match="bound"):
        ImportanceTimesteps(20).update(torch.tensor([1]), None)
    UniformTimesteps(5).load_state_dict({})
    with pytest.raises(ValueError, match="no state"):
        UniformTimesteps(5).load_state_dict({"loss_history": torch.zeros(1)})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_importance_sampling_draws_on_cuda():
    cuda = torch.device("cuda")
    diffusion = Diffusion(cosine_betas(20), "eps", "fixed_small")
    model = GaussianMixtureDenoiser(diffusion, POINTS)
    x0 = model.sample_data(512, torch.Generator().manual_seed(0)).to(torch.float64).to(cuda)
    g = torch.Generator(device=cuda).manual_seed(3)
    sampler = ImportanceTimesteps(20)
    for _ in range(3):
        values = trained_draws(VLB(levels=17), sampler, model, diffusion, x0, g)
        assert values.device.type == "cuda" and torch.isfinite(values).all()
    t, weights = sampler.sample(64, cuda, g)
    assert t.device.type == "cuda" and weights.device.type == "cuda"
