"""Positional information: the paper's sinusoidal encoding, rotary embeddings, and modules.

Pure functions first (arrays in, arrays out, no Flax), then the Flax modules that wrap them.

Sinusoidal (Vaswani et al. 2017, section 3.5):
    PE(pos, 2i)   = sin(pos / 10000^(2i / d_model))
    PE(pos, 2i+1) = cos(pos / 10000^(2i / d_model))
(the "interleaved" layout). tensor2tensor, fairseq and Marian put the same sines in the first
half of the columns and the cosines in the second half (the "split" layout).

Rotary (Su et al. 2021, "RoFormer", eq. 34): each pair (x[2i], x[2i+1]) of a query or key vector is
rotated by the angle pos * base^(-2i / d); then q_m . k_n depends on m and n only through m - n.
GPT-NeoX and Hugging Face's Llama rotate the pairs (x[i], x[i + d/2]) instead ("rotate_half"
layout: the same rotation after a fixed permutation of the features). Llama 3 rescales the
frequencies (``rope_scaling`` type "llama3"): wavelengths longer than original_len /
low_freq_factor are divided by ``factor``, those shorter than original_len / high_freq_factor
are kept, and the ones in between interpolate smoothly.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


# ---------------------------------------------------------------------- pure functions
def sinusoidal_encoding(
    positions: jax.Array, d_model: int, base: float = 10000.0, layout: str = "interleaved"
) -> jax.Array:
    """The paper's encoding at integer ``positions``.

    Args:
      positions: integer array of any shape P.
      d_model: encoding width (even or odd; the last odd column is a sine).
      layout: "interleaved" (the paper: sines in even columns, cosines in odd ones) or "split"
        (the ceil(D/2) sines first, then the floor(D/2) cosines: Marian's layout).
    Returns:
      float32 array of shape P + (d_model,).
    """
    i2 = jnp.arange(0, d_model, 2, dtype=jnp.float32)  # the "2i" of the formula
    inv_freq = jnp.power(jnp.float32(base), -i2 / d_model)  # (ceil(D/2),)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # P + (ceil(D/2),)
    if layout == "split":
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles[..., : d_model // 2])], axis=-1)
    if layout != "interleaved":
        raise ValueError(f"sinusoidal_encoding: layout={layout!r}; expected 'interleaved' or 'split'")
    pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # P + (ceil(D/2), 2)
    return pe.reshape(*positions.shape, -1)[..., :d_model]  # interleave sin, cos


def rope_frequencies(head_dim: int, base: float = 10000.0,
                     scaling: tuple[float, float, float, int] | None = None) -> jax.Array:
    """The (head_dim // 2,) float32 frequencies base^(-2i/head_dim), rescaled as Llama 3 does
    when ``scaling`` = (factor, low_freq_factor, high_freq_factor, original_max_len) is given
    (transformers' ``_compute_llama3_parameters``)."""
    inv_freq = jnp.power(jnp.float32(base), -jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    if scaling is None:
        return inv_freq
    factor, low, high, original = (float(v) for v in scaling)
    wavelen = 2 * jnp.pi / inv_freq
    low_wavelen, high_wavelen = original / low, original / high
    scaled = jnp.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return jnp.where(medium, smoothed, scaled).astype(jnp.float32)


def rope_angles(positions: jax.Array, head_dim: int, base: float = 10000.0,
                scaling: tuple[float, float, float, int] | None = None) -> jax.Array:
    """Rotation angles pos * frequency: shape positions.shape + (head_dim // 2,)."""
    return positions.astype(jnp.float32)[..., None] * rope_frequencies(head_dim, base, scaling)


def apply_rope(x: jax.Array, positions: jax.Array, base: float = 10000.0, layout: str = "interleaved",
               scaling: tuple[float, float, float, int] | None = None) -> jax.Array:
    """Rotates pairs of features of ``x`` by their position's angles.

    Args:
      x: (B, T, N, H) queries or keys, H even.
      positions: (B, T) integer positions.
      layout: "interleaved" (pairs (x[2i], x[2i+1]), RoFormer) or "rotate_half" (pairs
        (x[i], x[i + H/2]), Hugging Face's Llama); pair i turns by angle pos * frequency_i.
      scaling: Llama 3's frequency scaling (see :func:`rope_frequencies`), or None.
    Returns:
      (B, T, N, H) in x's dtype; norms are preserved (it is a rotation), computed in float32.
    """
    head_dim = x.shape[-1]
    angles = rope_angles(positions, head_dim, base, scaling)[:, :, None, :]  # (B, T, 1, H/2)
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    layout = getattr(layout, "value", layout)
    if layout == "rotate_half":
        xf = x.astype(jnp.float32)
        x1, x2 = xf[..., : head_dim // 2], xf[..., head_dim // 2:]  # (B, T, N, H/2) each
        return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)
    if layout != "interleaved":
        raise ValueError(f"apply_rope: layout={layout!r}; expected 'interleaved' or 'rotate_half'")
    xf = x.astype(jnp.float32).reshape(*x.shape[:-1], head_dim // 2, 2)  # (B, T, N, H/2, 2)
    x_even, x_odd = xf[..., 0], xf[..., 1]
    rotated = jnp.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], axis=-1)
    return rotated.reshape(x.shape).astype(x.dtype)


# ---------------------------------------------------------------------- modules
class SinusoidalPositions(nn.Module):
    """Adds nothing learnable: returns the paper's encoding for ``positions`` (B, T) -> (B, T, D)."""

    d_model: int
    dtype: jnp.dtype = jnp.float32
    layout: str = "interleaved"  # or "split" (see sinusoidal_encoding)

    @nn.compact
    def __call__(self, positions: jax.Array) -> jax.Array:
        return sinusoidal_encoding(positions, self.d_model, layout=self.layout).astype(self.dtype)


class LearnedPositions(nn.Module):
    """A trained position table (GPT-2's ``wpe``): positions (B, T) -> (B, T, D)."""

    max_len: int
    d_model: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, positions: jax.Array) -> jax.Array:
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), (None, "embed")),
            (self.max_len, self.d_model),
            self.param_dtype,
        )
        return jnp.take(table, positions, axis=0).astype(self.dtype)

