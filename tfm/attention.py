"""Scaled dot-product attention (Vaswani et al. 2017, section 3.2), masks, and multi-head attention.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V                      (eq. 1)
    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
        head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

Axis names (einsum alphabet): B batch, T query length, S key length, N heads, K key/value heads
(grouped-query attention, Ainslie et al. 2023: N / K query heads share each key/value head), H
head dim, D model dim. Masks are boolean, True where a query may attend to a key, and broadcast to
(B, N, T, S). Pure functions come first; the Flax module at the bottom only owns projections and
the decoding cache.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from tfm import kernels
from tfm.config import AttentionImpl, GradKernels, ModelConfig, PositionalKind, RopeLayout, parse_enum
from tfm.positional import apply_rope

Implementation = AttentionImpl | str  # an AttentionImpl or its value


# ---------------------------------------------------------------------- masks (pure)
def causal_mask(q_len: int, k_len: int | None = None, offset: int | jax.Array = 0) -> jax.Array:
    """(1, 1, T, S) mask letting query t (at absolute position offset + t) see keys s <= it."""
    k_len = q_len if k_len is None else k_len
    q_pos = offset + jnp.arange(q_len)[:, None]
    return (jnp.arange(k_len)[None, :] <= q_pos)[None, None]


def real_tokens(tokens: jax.Array, valid: jax.Array | None) -> jax.Array:
    """(B, T) bool: which of ``tokens`` are real, from ``valid`` (a bool mask, or segment ids with
    0 = padding); every token when ``valid`` is None. Token ids never decide it."""
    return jnp.ones(tokens.shape, jnp.bool_) if valid is None else jnp.asarray(valid).astype(jnp.bool_)


def padding_mask(k_valid: jax.Array) -> jax.Array:
    """(B, 1, 1, S) mask hiding padding keys.

    ``k_valid`` (B, S) says which keys are real: a boolean mask, or segment ids (0 = padding,
    1, 2, ... = real; see :func:`segment_mask`). Token ids never decide it: every id is a token.
    """
    return jnp.asarray(k_valid).astype(jnp.bool_)[:, None, None, :]


def segment_mask(q_segment_ids: jax.Array, k_segment_ids: jax.Array) -> jax.Array:
    """(B, 1, T, S) mask for packed sequences: a query sees only keys of its own segment."""
    return (q_segment_ids[:, :, None] == k_segment_ids[:, None, :])[:, None]


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
    """Logical AND of the masks that are not None (broadcast); None if all are None."""
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    out = masks[0]
    for m in masks[1:]:
        out = jnp.logical_and(out, m)
    return out


# ---------------------------------------------------------------------- attention (pure)
def attention_weights(
    q: jax.Array, k: jax.Array, mask: jax.Array | None = None, bias: jax.Array | None = None
) -> jax.Array:
    """softmax(q k^T / sqrt(H) + bias) over keys, in float32.

    Args:
      q: (B, T, N, H) queries. k: (B, S, N, H) keys.
      mask: boolean, broadcastable to (B, N, T, S); masked keys get exactly zero weight and a
        row with every key masked gets all-zero weights (not NaN).
      bias: additive float logits bias, broadcastable to (B, N, T, S).
    Returns:
      (B, N, T, S) float32 weights.
    """
    logits = jnp.einsum("BTNH,BSNH->BNTS", q, k, preferred_element_type=jnp.float32)
    logits = logits * jnp.float32(q.shape[-1] ** -0.5)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    return _softmax_masked(logits, mask)


def attend(weights: jax.Array, v: jax.Array) -> jax.Array:
    """Weighted sum of values: (B, N, T, S) x (B, S, N, H) -> (B, T, N, H) in v's dtype."""
    return jnp.einsum("BNTS,BSNH->BTNH", weights.astype(v.dtype), v)


def causal_blocks(q_len: int, k_len: int) -> list[tuple[int, int, int]]:
    """The (query start, query end, key end) blocks a causal attention computes.

    Query block [a, b) can only see keys [0, b) (key s is hidden from query t when s > t), so
    the blocks above the diagonal, where every weight is exactly zero, are skipped. Blocks are
    64 queries (T/8 when T > 512, so at most 8 blocks); T <= 64 is one block. At T = 256 that
    computes 10 of the 16 (64 x 64) score blocks.
    """
    size = max(64, -(-q_len // 8))
    starts = list(range(0, q_len, size))
    return [(a, min(a + size, q_len), min(a + size, k_len)) for a in starts]


def _softmax_masked(logits: jax.Array, mask: jax.Array | None) -> jax.Array:
    """float32 softmax over the last axis; masked keys get exactly zero weight, and a row with
    every key masked all-zero weights (not NaN, not uniform)."""
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    if mask is not None:
        # exp(min - max) already underflows to 0 wherever a row has a valid key; this also zeroes
        # rows with no valid key at all, which would otherwise be uniform.
        weights = jnp.where(mask, weights, 0.0)
    return weights


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """softmax(Q K^T / sqrt(d_k)) V with query t seeing only keys s <= t (and ``mask``), computed
    in the blocks of :func:`causal_blocks`: the same numbers as the full (T, S) square up to
    float summation order, with ~40 % fewer FLOPs and softmax elements at T = 256.

    Heads are moved in front once, (B, T, N, H) -> (B, N, T, H), so every block's two products
    are plain batched matmuls (XLA:CPU otherwise transposes around each of them).

    Args:
      q: (B, T, N, H); k, v: (B, S, N, H).
      mask: boolean, broadcastable to (B, N, T, S), True = attend; combined with causality.
    Returns:
      (B, T, N, H) in q's dtype.
    """
    t_len, s_len = q.shape[1], k.shape[1]
    qh = jnp.swapaxes(q, 1, 2)  # (B, N, T, H)
    kh = jnp.swapaxes(k, 1, 2)  # (B, N, S, H)
    vh = jnp.swapaxes(v, 1, 2)  # (B, N, S, H)
    full = combine_masks(causal_mask(t_len, s_len), mask)  # broadcastable to (B, N, T, S)
    full = jnp.broadcast_to(full, (*full.shape[:2], t_len, s_len))  # (B|1, N|1, T, S)
    scale = jnp.float32(q.shape[-1] ** -0.5)
    outs = []
    for a, b, s_end in causal_blocks(t_len, s_len):
        logits = jnp.einsum("BNTH,BNSH->BNTS", qh[:, :, a:b], kh[:, :, :s_end],
                            preferred_element_type=jnp.float32) * scale  # (B, N, b - a, s_end)
        weights = _softmax_masked(logits, full[:, :, a:b, :s_end])
        outs.append(jnp.einsum("BNTS,BNSH->BNTH", weights.astype(v.dtype), vh[:, :, :s_end]))
    out = jnp.concatenate(outs, axis=2)  # (B, N, T, H)
    return jnp.swapaxes(out, 1, 2).astype(q.dtype)  # (B, T, N, H)


def _use_causal_blocks(q: jax.Array, k: jax.Array, dropout_active: bool, bias: jax.Array | None,
                       implementation: Implementation) -> bool:
    """``"blocked"`` (the backend policy's "auto" on CPU, the only backend it was measured on),
    without dropout or bias, and longer than one block of :func:`causal_blocks`."""
    return (
        parse_enum(AttentionImpl, implementation, "attention implementation") is AttentionImpl.BLOCKED
        and not dropout_active
        and bias is None
        and len(causal_blocks(q.shape[1], k.shape[1])) > 1
    )


def _use_cudnn(q: jax.Array, dropout_active: bool, implementation: Implementation) -> bool:
    implementation = parse_enum(AttentionImpl, implementation, "attention implementation")
    if implementation is AttentionImpl.CUDNN:
        return True
    if implementation is not AttentionImpl.CUDNN_IF_SUPPORTED:  # "xla", "blocked", unresolved "auto"
        return False
    return (
        q.dtype in (jnp.bfloat16, jnp.float16)
        and not dropout_active
        and q.shape[-1] % 8 == 0
        and q.shape[-1] <= 128
    )


def scaled_dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    implementation: Implementation = AttentionImpl.AUTO,
    causal: bool = False,
) -> jax.Array:
    """softmax(Q K^T / sqrt(d_k)) V per head (eq. 1), with optional attention dropout.

    Args:
      q: (B, T, N, H); k, v: (B, S, N, H).
      mask: boolean, broadcastable to (B, N, T, S), True = attend.
      bias: additive logits bias, broadcastable to (B, N, T, S).
      dropout_rate: dropout on the attention weights (needs dropout_rng when not deterministic).
      implementation: "xla" is the reference path (softmax in float32 whatever the input dtype);
        "cudnn" calls jax.nn.dot_product_attention's cuDNN flash attention; "cudnn_if_supported"
        takes cuDNN for bfloat16/float16 inputs without dropout, else the reference path;
        "blocked" see ``causal``. "auto" is the backend policy's to resolve (:mod:`tfm.backend`);
        unresolved, it is the reference path.
      causal: also hide every key s > t from query t (combined with ``mask``). With "blocked",
        without dropout or bias and for T > 64, only the blocks at or below the diagonal
        are computed (:func:`causal_attention`): the same result up to float summation order.
    Returns:
      (B, T, N, H) in q's dtype.
    """
    dropout_active = dropout_rate > 0.0 and not deterministic
    if causal:
        if _use_causal_blocks(q, k, dropout_active, bias, implementation):
            return causal_attention(q, k, v, mask)
        mask = combine_masks(causal_mask(q.shape[1], k.shape[1]), mask)
    if _use_cudnn(q, dropout_active, implementation):
        if mask is not None:
            mask = jnp.broadcast_to(mask, (q.shape[0], mask.shape[1], q.shape[1], k.shape[1]))
        out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, implementation="cudnn")
        if mask is not None:  # cuDNN leaves rows with no valid key undefined: zero them as the reference does
            out = jnp.where(mask.any(-1).transpose(0, 2, 1)[..., None], out, 0)
        return out.astype(q.dtype)
    weights = attention_weights(q, k, mask, bias)
    if dropout_active:
        if dropout_rng is None:
            raise ValueError("scaled_dot_product_attention: dropout_rng is required for dropout")
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    return attend(weights, v).astype(q.dtype)


# ---------------------------------------------------------------------- module
class MultiHeadAttention(nn.Module):
    """Multi-head attention with W^Q (D -> N x H), W^K, W^V (D -> K x H) and W^O (N x H -> D).

    With K = ``num_kv_heads`` < N (grouped-query attention; K = 1: multi-query) query head n uses
    key/value head n // (N / K). Self-attention when called with one input, cross-attention with
    two. A model builds it from its ModelConfig with :meth:`from_config` (a new attention option
    is a field here, a line there, and its ModelConfig field). In ``decode`` mode it
    keeps a key/value cache in the 'cache' collection:
      * self-attention (``cross=False``): keys/values of the new tokens are written at
        ``cache_index`` into a (B, L, K, H) cache (only the key/value heads) that ``init`` sized from its input's length L;
        queries attend over the whole cache under the mask given by the caller.
      * cross-attention (``cross=True``): the encoder's keys/values are projected on the first
        decode call only and reused afterwards.
    Attention weights are sown into 'intermediates' / 'attention_weights' (reference path only)
    when that collection is mutable, for visualisation; return values never change.
    """

    num_heads: int
    head_dim: int
    num_kv_heads: int | None = None  # K key/value heads (grouped-query attention); None = num_heads
    dropout_rate: float = 0.0
    use_bias: bool = True  # biases of the output projection (and of q/k/v unless qkv_bias says)
    qkv_bias: bool | None = None  # biases of the query/key/value projections; None = use_bias
    rope_base: float | None = None  # rotary embeddings on q and k when set
    rope_layout: RopeLayout = RopeLayout.INTERLEAVED  # which features rotate together
    rope_scaling: tuple[float, float, float, int] | None = None  # Llama 3's frequency scaling
    cross: bool = False
    causal: bool = False  # self-attention: query t never sees keys after it (outside decode mode
    # the caller's mask need not say so, and the hidden blocks are skipped)
    decode: bool = False
    deterministic: bool = True
    implementation: Implementation = AttentionImpl.AUTO
    grad_kernels: GradKernels = GradKernels.AUTO  # how the projections are differentiated (tfm.kernels)
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @classmethod
    def from_config(cls, cfg: ModelConfig, *, cross: bool = False, causal: bool = False, decode: bool = False,
                    deterministic: bool = True, name: str | None = None) -> "MultiHeadAttention":
        """The self- (or cross-) attention of a model described by ``cfg`` (rotary embeddings
        act on self-attention only)."""
        rope = cfg.positional is PositionalKind.ROPE and not cross
        return cls(
            num_heads=cfg.num_heads,
            head_dim=cfg.head_dim,
            num_kv_heads=cfg.num_kv_heads,
            dropout_rate=cfg.attention_dropout_rate,
            use_bias=cfg.use_bias,
            qkv_bias=cfg.qkv_bias,
            rope_base=cfg.rope_base if rope else None,
            rope_layout=cfg.rope_layout,
            rope_scaling=cfg.rope_scaling,
            cross=cross,
            causal=causal and not cross,
            decode=decode,
            deterministic=deterministic,
            implementation=cfg.attention_impl,
            grad_kernels=cfg.grad_kernels,
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
            name=name,
        )

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    def _proj(self, name: str) -> nn.DenseGeneral:
        # queries: N heads (logical axis 'heads'); keys/values: K heads ('kv_heads')
        heads, axis = (self.num_heads, "heads") if name == "query" else (self.kv_heads, "kv_heads")
        return kernels.dense_general(
            (heads, self.head_dim),
            grad_kernels=self.grad_kernels,
            use_bias=self.use_bias if self.qkv_bias is None else self.qkv_bias,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.xavier_uniform(), ("embed", axis, "head_dim")
            ),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axis, "head_dim")),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )

    def _rope(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        return apply_rope(x, positions, self.rope_base, self.rope_layout, self.rope_scaling)

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        kv_input: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        kv_positions: jax.Array | None = None,
        cache_index: jax.Array | None = None,
    ) -> jax.Array:
        """
        Args:
          x: (B, T, D) query inputs (and key/value inputs for self-attention).
          kv_input: (B, S, D) key/value inputs for cross-attention.
          mask: boolean, broadcastable to (B, N, T, S) (in decode mode S is the cache length).
          positions, kv_positions: (B, T) / (B, S) integer positions for rotary embeddings.
          cache_index: scalar int: where the new tokens go in the self-attention cache (decode).
        Returns:
          (B, T, D) in the compute dtype.
        """
        if self.cross != (kv_input is not None):
            raise ValueError("MultiHeadAttention: pass kv_input exactly when cross=True")
        q = self._proj("query")(x)  # (B, T, N, H)
        if self.rope_base is not None and not self.cross:
            q = self._rope(q, positions)

        if self.cross:
            k, v = self._cross_kv(kv_input)  # (B, S, K, H)
        else:
            k = self._proj("key")(x)  # (B, T, K, H)
            v = self._proj("value")(x)
            if self.rope_base is not None:
                k = self._rope(k, positions)
            if self.decode:
                k, v = self._update_cache(k, v, cache_index)  # (B, L, K, H)
        if self.kv_heads != self.num_heads:  # each key/value head serves N / K query heads
            group = self.num_heads // self.kv_heads
            k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)  # (B, S, N, H)

        dropout_rng = None
        if self.dropout_rate > 0.0 and not self.deterministic:
            dropout_rng = self.make_rng("dropout")
        # In decode mode queries sit at cache_index onwards: the caller's mask carries causality.
        causal = self.causal and not self.cross and not self.decode
        if self.is_mutable_collection("intermediates") and AttentionImpl(self.implementation) is not AttentionImpl.CUDNN:
            weights = attention_weights(
                q, k, combine_masks(causal_mask(q.shape[1], k.shape[1]), mask) if causal else mask
            )
            self.sow("intermediates", "attention_weights", weights)
        out = scaled_dot_product_attention(
            q,
            k,
            v,
            mask,
            dropout_rate=self.dropout_rate,
            dropout_rng=dropout_rng,
            deterministic=self.deterministic,
            implementation=self.implementation,
            causal=causal,
        )  # (B, T, N, H)
        return kernels.dense_general(
            x.shape[-1],
            grad_kernels=self.grad_kernels,
            axis=(-2, -1),
            use_bias=self.use_bias,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.xavier_uniform(), ("heads", "head_dim", "embed")
            ),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(out)  # (B, T, D)

    def _cross_kv(self, kv_input: jax.Array) -> tuple[jax.Array, jax.Array]:
        key_proj, value_proj = self._proj("key"), self._proj("value")
        if not self.decode:
            return key_proj(kv_input), value_proj(kv_input)
        shape = (*kv_input.shape[:2], self.kv_heads, self.head_dim)
        ready = self.variable("cache", "cross_ready", lambda: jnp.zeros((), jnp.bool_))
        ck = self.variable("cache", "cross_key", jnp.zeros, shape, self.dtype)
        cv = self.variable("cache", "cross_value", jnp.zeros, shape, self.dtype)
        if self.is_initializing():  # create the params; the cache stays empty
            return key_proj(kv_input), value_proj(kv_input)
        k, v = nn.cond(
            ready.value,
            lambda mdl, _: (ck.value, cv.value),
            lambda mdl, x: (key_proj(x).astype(self.dtype), value_proj(x).astype(self.dtype)),
            self,
            kv_input,
        )
        ck.value, cv.value, ready.value = k, v, jnp.ones((), jnp.bool_)
        return k, v

    def _update_cache(self, k: jax.Array, v: jax.Array, cache_index) -> tuple[jax.Array, jax.Array]:
        # init is called with the full decode length: that sizes the cache (B, L, N, H).
        ck = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        cv = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        if self.is_initializing():
            return k, v
        if cache_index is None:
            raise ValueError("MultiHeadAttention: decode=True needs cache_index")
        start = (0, cache_index, 0, 0)
        ck.value = jax.lax.dynamic_update_slice(ck.value, k.astype(ck.value.dtype), start)
        cv.value = jax.lax.dynamic_update_slice(cv.value, v.astype(cv.value.dtype), start)
        return ck.value, cv.value
