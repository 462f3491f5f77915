"""The building blocks every architecture shares: embeddings, feed-forward, blocks and stacks.

Vaswani et al. 2017, section 3: each sub-layer (self-attention, cross-attention, feed-forward) is
wrapped in a residual connection and LayerNorm, ``LayerNorm(x + Dropout(Sublayer(x)))`` (post-LN,
the paper) or ``x + Dropout(Sublayer(LayerNorm(x)))`` (pre-LN). One :class:`Block` serves the
encoder (self-attention + feed-forward) and the decoder (masked self-attention + cross-attention +
feed-forward); one :class:`Stack` runs N of them, unrolled or with ``nn.scan``, with optional remat.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tfm import kernels
from tfm.attention import MultiHeadAttention
from tfm.config import Activation, ModelConfig, NormKind, NormPosition, Remat


def dtypes(cfg: ModelConfig) -> dict[str, Any]:
    """Module keyword arguments for the compute and parameter dtypes of ``cfg``."""
    return {"dtype": jnp.dtype(cfg.dtype), "param_dtype": jnp.dtype(cfg.param_dtype)}


class Embedder(nn.Module):
    """Token embedding (scaled by sqrt(d_model), section 3.4) and the tied output projection.

    ``__call__``: tokens (B, T) int -> (B, T, D). ``attend``: (B, T, D) -> logits (B, T, V),
    using the transposed embedding table, so source, target and output can share one matrix.
    """

    cfg: ModelConfig

    def setup(self):
        cfg = self.cfg
        stddev = cfg.d_model**-0.5 if cfg.scale_embeddings else 0.02
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=stddev), ("vocab", "embed")),
            (cfg.vocab_size, cfg.d_model),
            jnp.dtype(cfg.param_dtype),
        )

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = jnp.take(self.embedding, tokens, axis=0).astype(self.cfg.dtype)  # (B, T, D)
        if self.cfg.scale_embeddings:
            x = x * jnp.asarray(self.cfg.d_model**0.5, x.dtype)
        return x

    def attend(self, x: jax.Array) -> jax.Array:
        table = self.embedding.astype(x.dtype).T  # (D, V)
        return kernels.matmul(x, table, grad_kernels=self.cfg.grad_kernels)  # (B, T, V)


class FeedForward(nn.Module):
    """FFN(x) = act(x W_1 + b_1) W_2 + b_2 (eq. 2): (B, T, D) -> (B, T, D).

    With ``cfg.gated_ffn`` (Shazeer 2020, "GLU variants"; SwiGLU with SiLU):
    FFN(x) = (act(x W_g + b_g) * (x W_1 + b_1)) W_2 + b_2, W_g in parameter 'wi_gate'."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.cfg
        dense = lambda features, axes, name: kernels.dense(  # noqa: E731
            features,
            grad_kernels=cfg.grad_kernels,
            use_bias=cfg.use_bias,
            kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), axes),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
            name=name,
            **dtypes(cfg),
        )
        h = dense(cfg.d_ff, ("embed", "mlp"), "wi")(x)  # (B, T, F)
        if cfg.gated_ffn:
            h = ACTIVATIONS[cfg.activation](dense(cfg.d_ff, ("embed", "mlp"), "wi_gate")(x)) * h
        else:
            h = ACTIVATIONS[cfg.activation](h)
        return dense(cfg.d_model, ("mlp", "embed"), "wo")(h)  # (B, T, D)


ACTIVATIONS = {
    Activation.RELU: nn.relu,
    Activation.GELU: functools.partial(nn.gelu, approximate=True),
    Activation.GELU_EXACT: functools.partial(nn.gelu, approximate=False),
    Activation.SILU: nn.silu,
}


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019; Llama): y = x / sqrt(mean(x^2) + eps) * scale,
    statistics in float32, no bias, no mean subtraction: (..., D) -> (..., D) in ``dtype``.

    Parameter ``scale`` (D,), logical axis 'embed'. As Hugging Face's LlamaRMSNorm, the
    normalised x is cast to the compute dtype before the scale multiplies it."""

    epsilon: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), self.param_dtype)
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + jnp.float32(self.epsilon))
        return y.astype(self.dtype) * scale.astype(self.dtype)


def norm(cfg: ModelConfig, name: str | None = None) -> nn.Module:
    """The model's norm (``cfg.norm_kind``: LayerNorm or RMSNorm, eps ``cfg.layer_norm_eps``):
    every norm of every architecture is built here."""
    if cfg.norm_kind is NormKind.RMS_NORM:
        return RMSNorm(epsilon=cfg.layer_norm_eps, name=name, **dtypes(cfg))
    return kernels.LayerNorm(
        epsilon=cfg.layer_norm_eps, grad_kernels=cfg.grad_kernels, name=name, **dtypes(cfg)
    )


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Context:
    """What every block of a stack sees besides its input (a pytree, broadcast across layers).

    mask: (B, 1, T, S) self-attention mask (S = cache length in decode mode).
    positions: (B, T) positions, for rotary embeddings.
    encoded: (B, S_enc, D) encoder output, for cross-attention.
    cross_mask: (B, 1, T, S_enc) cross-attention mask.
    cache_index: scalar, where new tokens go in the decode cache.
    """

    mask: jax.Array | None = None
    positions: jax.Array | None = None
    encoded: jax.Array | None = None
    cross_mask: jax.Array | None = None
    cache_index: jax.Array | None = None


class Block(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; each with residual + LayerNorm.

    ``__call__(x, ctx) -> (x, None)`` with x (B, T, D): the (carry, output) form ``nn.scan`` needs.
    """

    cfg: ModelConfig
    cross: bool = False
    causal: bool = False  # masked self-attention (the decoder's): attention may skip hidden blocks
    decode: bool = False
    deterministic: bool = True

    def _sublayer(self, x: jax.Array, fn, name: str) -> jax.Array:
        cfg = self.cfg
        drop = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)
        if cfg.norm is NormPosition.PRE:
            return x + drop(fn(norm(cfg, f"{name}_norm")(x)))
        return norm(cfg, f"{name}_norm")(x + drop(fn(x)))

    def _attention(self, cross: bool, name: str) -> MultiHeadAttention:
        return MultiHeadAttention.from_config(
            self.cfg, cross=cross, causal=self.causal, decode=self.decode, deterministic=self.deterministic,
            name=name)

    @nn.compact
    def __call__(self, x: jax.Array, ctx: Context) -> tuple[jax.Array, None]:
        self_attn = self._attention(cross=False, name="self_attention")
        x = self._sublayer(
            x,
            lambda h: self_attn(h, mask=ctx.mask, positions=ctx.positions, cache_index=ctx.cache_index),
            "self_attention",
        )
        if self.cross:
            cross_attn = self._attention(cross=True, name="cross_attention")
            x = self._sublayer(x, lambda h: cross_attn(h, ctx.encoded, mask=ctx.cross_mask), "cross_attention")
        x = self._sublayer(x, FeedForward(self.cfg, name="feed_forward"), "feed_forward")
        return x, None


_REMAT_POLICIES = {
    Remat.FULL: None,
    Remat.DOTS: jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Stack(nn.Module):
    """``num_layers`` copies of :class:`Block` (with a final LayerNorm in the pre-LN arrangement).

    With ``cfg.scan_layers`` the layers' parameters are stacked on a leading 'layers' axis and run
    with ``nn.scan`` (one compiled body instead of N); ``cfg.remat`` wraps each block in
    ``nn.remat``. Both give the same function as the unrolled stack.
    """

    cfg: ModelConfig
    num_layers: int
    cross: bool = False
    causal: bool = False  # the decoder's masked self-attention (see Block.causal)
    decode: bool = False
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, ctx: Context) -> jax.Array:
        cfg = self.cfg
        block_cls = Block
        if cfg.remat is not Remat.NONE:
            block_cls = nn.remat(block_cls, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
        kwargs = dict(cfg=cfg, cross=self.cross, causal=self.causal, decode=self.decode, deterministic=self.deterministic)
        if cfg.scan_layers:
            scanned = nn.scan(
                block_cls,
                variable_axes={"params": 0, "cache": 0, "intermediates": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=nn.broadcast,
                length=self.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, _ = scanned(name="layers", **kwargs)(x, ctx)
        else:
            for i in range(self.num_layers):
                x, _ = block_cls(name=f"layer_{i}", **kwargs)(x, ctx)
        if cfg.norm is NormPosition.PRE:
            x = norm(cfg, "final_norm")(x)
        return x
