"""An example workbench plugin: the `geometric` noise schedule.

Install it (`pip install ./examples/workbench-example`) and `wb list
schedulers` shows `geometric`, provided by `workbench-example`; any
experiment can then say `scheduler = { name = "geometric" }`.
"""

from __future__ import annotations

import math

from pydantic import Field

import workbench as wb


class Geometric(wb.Scheduler):
    """Betas growing geometrically from beta_start to beta_end (log-linear)."""

    name = "geometric"

    beta_start: float = Field(1e-4, gt=0, lt=1, description="beta at the first step")
    beta_end: float = Field(0.02, gt=0, lt=1, description="beta at the last step")

    def betas(self):
        import torch  # imported on use, so that `wb list` stays fast

        return torch.logspace(
            math.log10(self.beta_start), math.log10(self.beta_end), self.timesteps, dtype=torch.float64
        )


@wb.hookimpl
def register_schedulers(register):
    register(Geometric)
