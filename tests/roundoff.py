"""How far rounding alone can move a training step: bounds derived from the arithmetic.

Two computations that agree in exact arithmetic (one process and two, say) differ
in floating point because they sum in another order. A test that compares them
needs a tolerance that admits every such difference on every CPU and still
fails on a real mistake. A number tuned on one machine does neither for sure;
these bounds follow from the unit roundoff u (2^-24 in float32, 2^-53 in
float64) and quantities measured on the run itself.

Gradients. An element of the global batch's gradient is a sum of at most
n = batch_size x P terms (P: the positions one example applies a weight at, the
data's H x W for images, 1 for vectors). Summed in any order and blocking, the
computed sum is within gamma_n * sum|terms| of the exact one, gamma_n =
n u / (1 - n u) (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
sec. 4.2), so two evaluations are within 2 gamma_n * sum|terms| of each other.
For sum|terms| we take S, the largest over the network of sum_b |g_b|, the
per-example gradients' absolute sum (one vector-Jacobian product per example,
at the step's own inputs). The bound is normwise on purpose: inside one example
terms can cancel exactly (an attention layer's key bias has a gradient of
exactly 0, computed as rounding noise the size of the other terms), which an
elementwise sum_b |g_b| would miss. Clipping multiplies the gradient by
c = clip / |g|, whose relative error is at most |delta|_2 / |g| (<= sqrt(N) delta / |g|
for N parameters) plus a few roundings (4u).

Weights (AdamW, Loshchilov & Hutter 2019, torch's defaults beta = (0.9, 0.999),
eps = 1e-8). Step t moves an element by lr * m^ / (sqrt(v^) + eps). Its derivative
in this step's gradient g is a / (sqrt(v^) + eps) - (m^ / (sqrt(v^) + eps)) (b g / sqrt(v^)) / (sqrt(v^) + eps),
with a = (1 - b1) / (1 - b1^t) and b = (1 - b2) / (1 - b2^t); since b g^2 <= v^ and
|m^| / sqrt(v^) <= r_t (Cauchy-Schwarz over the t gradients so far:
r_t = a sqrt((1 - b2^t) / (1 - b2)) sqrt(sum_{k<t} (b1^2 / b2)^k), 1 at t = 1, 1.0013 at t = 2),
a gradient that moves by at most delta moves the step by at most
lr delta (a + r_t sqrt(b)) / (sqrt(v^_low) + eps), v^_low being v^ with every |g| so far
lowered by its delta. Whatever the gradients, though, the step is at most lr r_t
in size, so two runs part by at most 2 lr r_t per step (an element whose
gradient rounding can flip, as an exactly-zero one can); the bound takes the
smaller of the two. Each run also rounds its update, some ten roundings
(m, v, the square root, the division, the bias corrections: fused and foreach
AdamW order them differently) of at most u lr r_t each, and the new weight,
u |w|: 2u (|w| + 10 lr r_t) more per step. Weight decay shrinks an earlier difference by
(1 - lr wd) <= 1, so the differences of the steps add up.

What the bound leaves out: it is first order. It takes each step's gradients
at one run's weights, and does not follow how a difference in the weights
changes the next step's gradient. Measured on the comparisons of
tests/test_distributed.py, with torch's AVX-512, AVX2 and plain kernels
(ATEN_CPU_CAPABILITY), fused and foreach AdamW: 2 processes' first gradient
lies at least 50 times inside its bound, the weights after several steps 1000
times (float64, and float32 through the CLI). A rank training on the wrong
shard lands 3e3 (float32 gradient) to 5e11 (float64 weights) times outside,
a gradient averaged wrongly 1e4 times, a sampler history of one rank's shard
3e8 times.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch

U32 = 2.0**-24  # unit roundoff (half the machine epsilon) of float32
U64 = 2.0**-53  # and of float64
BETAS, EPS = (0.9, 0.999), 1e-8  # torch's AdamW defaults, which the workbench's optimizer keeps


def unit_roundoff(dtype: torch.dtype) -> float:
    return {torch.float32: U32, torch.float64: U64}[dtype]


def gamma(n: int, u: float) -> float:
    """Higham's gamma_n: the relative error bound of n roundings."""
    assert n * u < 1
    return n * u / (1 - n * u)


class Recorder:
    """Stands in for a trainer's network: each call's inputs and the gradient of the loss with respect to its output."""

    def __init__(self, network: Callable) -> None:
        self.network, self.calls = network, []

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.network(*args, **kwargs)
        call = [args, kwargs, None]
        out.register_hook(lambda grad: call.__setitem__(2, grad))
        self.calls.append(call)
        return out


def per_example_gradients(model: torch.nn.Module, calls: list) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the gradient, sum_b |g_b|) in float64, from one vector-Jacobian product per recorded example.

    Valid for a network that treats the examples of a batch independently (no batch norm).
    """
    params = dict(model.named_parameters())
    total = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
    absolute = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
    for args, kwargs, cotangent in calls:
        size = len(cotangent)
        for b in range(size):
            def one(v: Any) -> Any:
                return v[b : b + 1] if isinstance(v, torch.Tensor) and v.dim() and len(v) == size else v

            out = model(*map(one, args), **{k: one(v) for k, v in kwargs.items()})
            grads = torch.autograd.grad(out, list(params.values()), cotangent[b : b + 1], allow_unused=True)
            for k, g in zip(params, grads):
                if g is not None:
                    total[k] += g.double()
                    absolute[k] += g.double().abs()
    return total, absolute


def traced_steps(
    trainer: Any, take_step: Callable[[], Any], steps: int, u: float
) -> tuple[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Take `steps` optimizer steps with `take_step()`, bounding what rounding can change.

    `trainer` has `model`, `forward` (what the loss calls), `optimizer` and `exp`. Returns
    ((the first step's gradients, the bound on their rounding), the bound on the weights'
    rounding after all steps), each a dict of float64 tensors by parameter name.
    """
    spec = trainer.exp.train
    params = dict(trainer.model.named_parameters())
    count = sum(p.numel() for p in params.values())
    b1, b2 = BETAS
    v_low = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
    weights = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
    first = None
    for t in range(1, steps + 1):
        before = copy.deepcopy(trainer.model)
        recorder = trainer.forward = Recorder(trainer.forward)
        try:
            take_step()
        finally:
            trainer.forward = recorder.network
        lr = trainer.optimizer.param_groups[0]["lr"]
        wd = trainer.optimizer.param_groups[0]["weight_decay"]
        unclipped, absolute = per_example_gradients(before, recorder.calls)
        n = spec.batch_size * math.prod(recorder.calls[0][0][0].shape[2:])
        delta = 2 * gamma(n, u) * max(a.max().item() for a in absolute.values())
        norm = math.sqrt(sum(g.square().sum().item() for g in unclipped.values()))
        grads = {k: p.grad.detach().double() for k, p in params.items()}
        if spec.grad_clip is not None and norm > spec.grad_clip:
            c, rho = spec.grad_clip / norm, math.sqrt(count) * delta / norm + 4 * u
            bound = {k: c * delta + rho * g.abs() for k, g in grads.items()}
        else:
            bound = {k: torch.full_like(g, delta) for k, g in grads.items()}
        if first is None:
            first = grads, bound
        a, b = (1 - b1) / (1 - b1**t), (1 - b2) / (1 - b2**t)
        r = a * math.sqrt((1 - b2**t) / (1 - b2)) * math.sqrt(sum((b1 * b1 / b2) ** k for k in range(t)))
        for k, p in params.items():
            v_low[k] = b2 * v_low[k] + (1 - b2) * (grads[k].abs() - bound[k]).clamp_min(0).square()
            moved = lr * bound[k] * (a + r * math.sqrt(b)) / ((v_low[k] / (1 - b2**t)).sqrt() + EPS)
            weights[k] = weights[k] * (1 - lr * wd) + moved.clamp_max(2 * lr * r) + 2 * u * (p.detach().double().abs() + 10 * lr * r)
    assert first is not None
    return first, weights


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor | float, what: str) -> None:
    """|actual - expected| <= bound everywhere (a NaN fails)."""
    difference = (actual.double().cpu() - expected.double().cpu()).abs()
    bound = torch.as_tensor(bound, dtype=torch.float64).cpu().expand_as(difference)
    outside = ~(difference <= bound)
    if outside.any():
        worst = (difference - bound).nan_to_num(math.inf).argmax()
        index = tuple(torch.unravel_index(worst, difference.shape)) if difference.dim() else ()
        raise AssertionError(
            f"{what}: {int(outside.sum())} of {difference.numel()} elements beyond the rounding bound; "
            f"worst at {tuple(int(i) for i in index)}: {actual.flatten()[worst].item()!r} against "
            f"{expected.flatten()[worst].item()!r}, bound {bound.flatten()[worst].item():.3g}"
        )
