"""A PyTorch reference of tfm's benchmark language models and training step (eager mode).

The same network as ``bench_configs``' cpu_small / cpu_base (a nanoGPT-style pre-LN GPT): token
+ learned position embeddings, ``L`` blocks of ``x + attn(LN(x))`` and ``x + mlp(LN(x))`` with
biases everywhere, causal multi-head attention through ``F.scaled_dot_product_attention`` (the
fused CPU kernel PyTorch users get), tanh-approximate GELU (tfm's ``nn.gelu(approximate=True)``),
a final LayerNorm and the output projection tied to the token embedding; no dropout.

The same step: cross-entropy averaged over tokens, gradients, clipping to global norm 1.0
(``clip_grad_norm_``), AdamW (b1 0.9, b2 0.99, eps 1e-8, weight decay 0.1 on the matrices and
embedding tables only, as tfm's mask and nanoGPT's groups), and the same warm-up + cosine
learning rate (optax.warmup_cosine_decay_schedule: 0 -> 1e-3 over 100 steps, to 1e-4 at 2000).

Only the benchmark imports this module (torch is optional: ``pip install torch``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, eps: float):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d, eps=eps)
        self.qkv = nn.Linear(d, 3 * d)  # W^Q, W^K, W^V side by side (3 D^2 + 3 D parameters)
        self.out = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, eps=eps)
        self.fc1 = nn.Linear(d, ff)
        self.fc2 = nn.Linear(ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    """``inputs (B, T) int64 -> logits (B, T, V)``."""

    def __init__(self, vocab: int, d: int, heads: int, layers: int, ff: int, max_len: int,
                 eps: float = 1e-5):
        super().__init__()
        self.tokens = nn.Embedding(vocab, d)
        self.positions = nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList(Block(d, heads, ff, eps) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d, eps=eps)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        t = inputs.shape[1]
        x = self.tokens(inputs) + self.positions(torch.arange(t, device=inputs.device))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.tokens.weight.T  # tied output projection


def from_model_config(cfg) -> GPT:
    """The GPT of a tfm ``ModelConfig`` (decoder LM, pre-LN, learned positions, tied output)."""
    return GPT(cfg.vocab_size, cfg.d_model, cfg.num_heads, cfg.num_layers, cfg.d_ff, cfg.max_len,
               cfg.layer_norm_eps)


def warmup_cosine(step: int, peak: float = 1e-3, warmup: int = 100, total: int = 2000,
                  end_ratio: float = 0.1) -> float:
    """optax.warmup_cosine_decay_schedule(0, peak, warmup, total, peak * end_ratio) at ``step``."""
    if step < warmup:
        return peak * step / warmup
    progress = min(step - warmup, total - warmup) / (total - warmup)
    end = peak * end_ratio
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, *, b2: float = 0.99, eps: float = 1e-8,
                   weight_decay: float = 0.1) -> torch.optim.AdamW:
    """AdamW with weight decay on the 2-D parameters (matrices, embedding tables) only."""
    params = list(model.parameters())
    return torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=0.0, betas=(0.9, b2), eps=eps,
    )


class TrainStep:
    """One optimiser step: ``loss = step(inputs, targets)`` (float)."""

    def __init__(self, model: GPT, opt: torch.optim.Optimizer, clip: float = 1.0):
        self.model, self.opt, self.clip, self.count = model, opt, clip, 0

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        for group in self.opt.param_groups:
            group["lr"] = warmup_cosine(self.count)
        logits = self.model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.count += 1
        return loss.item()


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # the tied table once


def step_flops(step: TrainStep, inputs: torch.Tensor, targets: torch.Tensor) -> int:
    """Matmul + attention FLOPs of one forward and backward pass, counted by PyTorch
    (torch.utils.flop_counter) while it runs: an independent check of tfm's formula."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # the math kernel: the counter does not see inside the fused CPU attention kernel
    with counter, sdpa_kernel(SDPBackend.MATH):
        logits = step.model(inputs)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).backward()
    step.model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())
