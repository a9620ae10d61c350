"""`AdamStep`: Adam on one tensor (activation maximisation's image) at the cost of torch's fused
update kernel alone."""

from __future__ import annotations

import torch


class AdamStep:
    """Adam on the one image tensor through torch's own fused update kernel (`torch._fused_adam_`,
    what `torch.optim.Adam(fused=True)` runs), called directly: `Optimizer.step`'s bookkeeping and
    `adam()`'s grouping by device cost ~15 us a step around a ~4 us update (the digits CNN's forward
    pass is ~0.17 ms). The gradient is consumed, as `zero_grad` would."""

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.m, self.v = torch.zeros_like(param), torch.zeros_like(param)
        self.steps = torch.zeros((), dtype=torch.float32)

    def step(self) -> None:
        grad, self.param.grad = self.param.grad, None
        assert grad is not None
        with torch.no_grad():
            self.steps.add_(1)
            torch._fused_adam_([self.param], [grad], [self.m], [self.v], [], [self.steps], amsgrad=False,
                               beta1=self.betas[0], beta2=self.betas[1], lr=self.lr, weight_decay=0.0, eps=self.eps,
                               maximize=False)
