"""The three architectures, assembled from one set of blocks (tfm.layers).

* :class:`EncoderDecoder`: the paper's translation model (Vaswani et al. 2017, figure 1).
* :class:`DecoderLM`: a decoder-only language model (GPT): the decoder without cross-attention.
* :class:`EncoderClassifier`: the encoder-only model (BERT-style) with the head ``cfg.head``
  names: a pooled classifier (optionally through BERT's pooler), a masked-LM head, or none.

Padding is data, not a token: every token id, 0 included, is an ordinary token. What is real
travels with the batch as segment ids (B, T) int: 0 = padding, 1, 2, ... = which example of a
packed row the token belongs to (an unpacked row is 1 on real tokens, 0 on padding), together
with per-example positions. A query sees only keys of its own segment, so padding is masked out
and examples packed into one row never attend to each other. Called without segment ids, a
model treats every token as real (only causality is masked).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from tfm import kernels
from tfm.attention import causal_mask, combine_masks, padding_mask, real_tokens, segment_mask
from tfm.backend import BackendPolicy
from tfm.config import Arch, EncoderHead, ModelConfig, Pooling, PositionalKind
from tfm.layers import ACTIVATIONS, Context, Embedder, Stack, dtypes, norm
from tfm.positional import LearnedPositions, SinusoidalPositions
from tfm.token_ids import check_token_ids

def _default_positions(tokens: jax.Array, offset: jax.Array | int = 0) -> jax.Array:
    return jnp.broadcast_to(offset + jnp.arange(tokens.shape[1]), tokens.shape)


def _check_length(cfg: ModelConfig, length: int, what: str) -> None:
    if length > cfg.max_len:
        raise ValueError(f"{what} has length {length} > ModelConfig.max_len={cfg.max_len}")


class _Tower(nn.Module):
    """Embed tokens, add positions, dropout, run a stack: shared by encoder and decoder."""

    cfg: ModelConfig
    embedder: Embedder

    def embed(self, tokens: jax.Array, positions: jax.Array, deterministic: bool,
              token_types: jax.Array | None = None) -> jax.Array:
        cfg = self.cfg
        x = self.embedder(tokens)  # (B, T, D)
        if cfg.positional is PositionalKind.SINUSOIDAL:
            x = x + SinusoidalPositions(cfg.d_model, dtype=x.dtype, layout=cfg.sinusoidal_layout.value)(positions)
        elif cfg.positional is PositionalKind.LEARNED:
            x = x + LearnedPositions(cfg.max_len, cfg.d_model, name="position_embedding", **dtypes(cfg))(positions)
        # ROPE acts inside attention; NONE adds nothing.
        if cfg.type_vocab_size:  # BERT's segment A/B embeddings: a learned (type_vocab_size, D) table
            if token_types is None:
                token_types = jnp.zeros_like(tokens)
            check_token_ids(token_types, cfg.type_vocab_size, "token_types", batched=True)
            x = x + LearnedPositions(cfg.type_vocab_size, cfg.d_model, name="token_type_embedding",
                                     **dtypes(cfg))(token_types)
        elif token_types is not None:
            raise ValueError("token_types given but ModelConfig.type_vocab_size=0 (no token-type embeddings)")
        if cfg.embedding_norm:
            x = norm(cfg, "embedding_norm")(x)
        return nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(x)


class Encoder(_Tower):
    """tokens (B, S) -> encoded (B, S, D)."""

    @nn.compact
    def __call__(self, tokens, *, segment_ids=None, positions=None, token_types=None, deterministic: bool = True):
        cfg = self.cfg
        check_token_ids(tokens, cfg.vocab_size, "encoder input", batched=True)
        _check_length(cfg, tokens.shape[1], "encoder input")
        positions = _default_positions(tokens) if positions is None else positions
        x = self.embed(tokens, positions, deterministic, token_types)
        mask = None if segment_ids is None else segment_mask(segment_ids, segment_ids)  # (B, 1, S, S)
        stack = Stack(cfg, cfg.num_layers, deterministic=deterministic, name="stack")
        return stack(x, Context(mask=mask, positions=positions))


class Decoder(_Tower):
    """tokens (B, T) [+ encoded (B, S, D)] -> logits (B, T, V) in float32.

    Masks: causal, plus with ``segment_ids`` a query sees only keys of its own segment; the
    cross-attention hides encoder keys whose ``encoder_segment_ids`` is 0 and, when both are
    given, keys of other segments.

    In ``decode`` mode it keeps a cache ('cache' collection): the write index and which cached
    positions hold real tokens. ``init`` with decode=True and a (B, L) input sizes it for L tokens.
    Each call appends its T tokens (T = the prompt length at prefill, then 1) and attends causally
    over the real tokens cached so far; ``segment_ids`` then only says which of the T tokens are
    real (nonzero; e.g. the left padding of prompts is 0), None = all of them; positions default
    to the cache index onwards. (Packed rows are not decoded.)
    """

    cross: bool = False
    num_layers: int = 0

    @nn.compact
    def __call__(
        self,
        tokens,
        encoded=None,
        *,
        segment_ids=None,
        positions=None,
        encoder_segment_ids=None,
        deterministic: bool = True,
        decode: bool = False,
    ):
        cfg = self.cfg
        check_token_ids(tokens, cfg.vocab_size, "decoder input", batched=True)
        length = tokens.shape[1]
        cache_index = None
        if decode:
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            valid = self.variable("cache", "valid", lambda: jnp.zeros(tokens.shape, jnp.bool_))
            cache_len = valid.value.shape[1]
            _check_length(cfg, cache_len, "decode cache")
            cache_index = index.value
            if positions is None:
                positions = _default_positions(tokens, cache_index)
            if not self.is_initializing():
                real = real_tokens(tokens, segment_ids)
                valid.value = jax.lax.dynamic_update_slice(valid.value, real, (0, cache_index))
                index.value = cache_index + length
            mask = combine_masks(
                causal_mask(length, cache_len, offset=cache_index), valid.value[:, None, None, :]
            )  # (B, 1, T, L)
        else:
            _check_length(cfg, length, "decoder input")
            positions = _default_positions(tokens) if positions is None else positions
            # causality is the self-attention's own (Stack(causal=True)), so it can skip hidden blocks
            mask = None if segment_ids is None else segment_mask(segment_ids, segment_ids)  # (B, 1, T, T)
        cross_mask = None
        if self.cross:
            cross_mask = combine_masks(
                None if encoder_segment_ids is None else padding_mask(encoder_segment_ids),
                None
                if decode or segment_ids is None or encoder_segment_ids is None
                else segment_mask(segment_ids, encoder_segment_ids),
            )  # (B, 1, T|1, S) or None
        x = self.embed(tokens, positions, deterministic)
        ctx = Context(mask=mask, positions=positions, encoded=encoded, cross_mask=cross_mask, cache_index=cache_index)
        stack = Stack(
            cfg, self.num_layers, cross=self.cross, causal=True, decode=decode, deterministic=deterministic,
            name="stack",
        )
        x = stack(x, ctx)  # (B, T, D)
        if cfg.tie_output:
            logits = self.embedder.attend(x)
            if cfg.logits_bias:
                bias_init = nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",))
                bias = self.param("logits_bias", bias_init, (cfg.vocab_size,), jnp.dtype(cfg.param_dtype))
                logits = logits + bias.astype(logits.dtype)  # (B, T, V)
        else:
            logits = kernels.dense(
                cfg.vocab_size,
                grad_kernels=cfg.grad_kernels,
                use_bias=cfg.output_bias,
                kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ("embed", "vocab")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                name="logits",
                **dtypes(cfg),
            )(x)
        return logits.astype(jnp.float32)  # (B, T, V)


class EncoderDecoder(nn.Module):
    """The paper's model: ``(inputs (B, S), decoder_inputs (B, T)) -> logits (B, T, V)``.

    ``decoder_inputs`` is the target shifted right with a BOS token (the data pipeline builds it).
    Padding comes from ``inputs_segment_ids`` / ``decoder_segment_ids`` (0 = padding; see the
    module docstring): encoder keys of segment 0 are hidden from cross-attention even when
    ``decoder_segment_ids`` is None; with both, each packed example sees only its own source.
    """

    cfg: ModelConfig

    def setup(self):
        cfg = self.cfg
        cfg.require_vocab()
        self.source_embedder = Embedder(cfg)
        self.target_embedder = self.source_embedder if cfg.share_embeddings else Embedder(cfg)
        self.encoder = Encoder(cfg, self.source_embedder)
        self.decoder = Decoder(cfg, self.target_embedder, cross=True, num_layers=cfg.decoder_layers)

    def encode(self, inputs, *, segment_ids=None, positions=None, deterministic: bool = True):
        """inputs (B, S) -> encoded (B, S, D)."""
        return self.encoder(inputs, segment_ids=segment_ids, positions=positions, deterministic=deterministic)

    def decode(
        self,
        encoded,
        decoder_inputs,
        *,
        inputs_segment_ids=None,
        decoder_segment_ids=None,
        decoder_positions=None,
        deterministic: bool = True,
        decode: bool = False,
    ):
        """encoded (B, S, D), decoder_inputs (B, T) -> logits (B, T, V).

        ``inputs_segment_ids`` (B, S) marks the source's padding (0) for cross-attention; in
        ``decode`` mode ``decoder_segment_ids`` only marks which fed tokens are real (see
        :class:`Decoder`)."""
        return self.decoder(
            decoder_inputs,
            encoded,
            segment_ids=decoder_segment_ids,
            positions=decoder_positions,
            encoder_segment_ids=inputs_segment_ids,
            deterministic=deterministic,
            decode=decode,
        )

    def __call__(
        self,
        inputs,
        decoder_inputs,
        *,
        inputs_segment_ids=None,
        inputs_positions=None,
        decoder_segment_ids=None,
        decoder_positions=None,
        deterministic: bool = True,
    ):
        encoded = self.encode(
            inputs, segment_ids=inputs_segment_ids, positions=inputs_positions, deterministic=deterministic
        )
        return self.decode(
            encoded,
            decoder_inputs,
            inputs_segment_ids=inputs_segment_ids,
            decoder_segment_ids=decoder_segment_ids,
            decoder_positions=decoder_positions,
            deterministic=deterministic,
        )


class DecoderLM(nn.Module):
    """GPT-style language model: ``inputs (B, T) -> next-token logits (B, T, V)``."""

    cfg: ModelConfig

    def setup(self):
        self.cfg.require_vocab()
        self.embedder = Embedder(self.cfg)
        self.decoder = Decoder(self.cfg, self.embedder, cross=False, num_layers=self.cfg.num_layers)

    def __call__(self, inputs, *, segment_ids=None, positions=None, deterministic: bool = True, decode: bool = False):
        return self.decoder(
            inputs, segment_ids=segment_ids, positions=positions, deterministic=deterministic, decode=decode
        )


class MaskedLMHead(nn.Module):
    """BERT's masked-LM head: (B, S, D) -> logits (B, S, V) in float32.

    transform = LayerNorm(act(x W + b)) (``cfg.activation``), then the output projection: the
    transposed embedding table (``tie_output``) plus, with ``logits_bias``, a learned (V,) bias
    (BERT's ``cls.predictions``), or an untied Dense layer with bias.
    """

    cfg: ModelConfig
    embedder: Embedder

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.cfg
        h = kernels.dense(
            cfg.d_model,
            grad_kernels=cfg.grad_kernels,
            kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
            name="transform",
            **dtypes(cfg),
        )(x)  # (B, S, D)
        h = norm(cfg, "transform_norm")(ACTIVATIONS[cfg.activation](h))
        if not cfg.tie_output:
            return kernels.dense(
                cfg.vocab_size,
                grad_kernels=cfg.grad_kernels,
                kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ("embed", "vocab")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                name="logits",
                **dtypes(cfg),
            )(h).astype(jnp.float32)
        logits = self.embedder.attend(h)  # (B, S, V)
        if cfg.logits_bias:
            bias_init = nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",))
            bias = self.param("logits_bias", bias_init, (cfg.vocab_size,), jnp.dtype(cfg.param_dtype))
            logits = logits + bias.astype(logits.dtype)
        return logits.astype(jnp.float32)


def _head_dense(cfg: ModelConfig, features: int, out_axis: str) -> nn.Module:
    """A dense layer D -> ``features`` (with bias) of the encoder-only model's pooler or classifier."""
    return kernels.dense(
        features,
        grad_kernels=cfg.grad_kernels,
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ("embed", out_axis)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (out_axis,)),
        **dtypes(cfg),
    )


class EncoderClassifier(nn.Module):
    """The encoder-only model (BERT-style): an encoder and the head ``cfg.head`` names.

    Methods, each ``(inputs (B, S), *, segment_ids, positions, token_types, deterministic)``:
    :meth:`encode` -> hidden states (B, S, D); :meth:`classify` -> class logits (B, num_classes)
    (needs head "classifier"); :meth:`mlm_logits` -> masked-LM logits (B, S, V) (needs head
    "mlm"). ``__call__`` is the one of them that ``cfg.head`` names (what training calls).

    Pooling for the classifier: "mean" averages the tokens with ``segment_ids > 0`` (every
    token when None), "first" takes the first token; with ``cfg.pooler`` the pooled vector then
    goes through dense + tanh (BERT's pooler). ``token_types`` (B, S) ids below
    ``type_vocab_size`` (None = all 0) select the token-type embeddings.
    """

    cfg: ModelConfig

    def setup(self):
        cfg = self.cfg
        cfg.require_vocab()
        self.embedder = Embedder(cfg)
        self.encoder = Encoder(cfg, self.embedder)
        if cfg.pooler:
            self.pooler = _head_dense(cfg, cfg.d_model, "mlp")
        if cfg.head is EncoderHead.CLASSIFIER:
            self.head = _head_dense(cfg, cfg.num_classes, "classes")
        elif cfg.head is EncoderHead.MLM:
            self.mlm = MaskedLMHead(cfg, self.embedder)

    def encode(self, inputs, *, segment_ids=None, positions=None, token_types=None, deterministic: bool = True):
        """inputs (B, S) -> hidden states (B, S, D) (after the last block)."""
        return self.encoder(inputs, segment_ids=segment_ids, positions=positions, token_types=token_types,
                            deterministic=deterministic)

    def _pool(self, x, inputs, segment_ids):
        if self.cfg.pooling is Pooling.FIRST:
            pooled = x[:, 0]
        else:
            real = real_tokens(inputs, segment_ids)
            valid = real[..., None].astype(x.dtype)  # (B, S, 1)
            pooled = (x * valid).sum(1) / jnp.maximum(valid.sum(1), 1).astype(x.dtype)  # (B, D)
        return jnp.tanh(self.pooler(pooled)) if self.cfg.pooler else pooled

    def classify(self, inputs, *, segment_ids=None, positions=None, token_types=None, deterministic: bool = True):
        """inputs (B, S) -> class logits (B, num_classes) in float32."""
        self._require(EncoderHead.CLASSIFIER, "classify")
        x = self.encode(inputs, segment_ids=segment_ids, positions=positions, token_types=token_types,
                        deterministic=deterministic)
        return self.head(self._pool(x, inputs, segment_ids)).astype(jnp.float32)  # (B, num_classes)

    def mlm_logits(self, inputs, *, segment_ids=None, positions=None, token_types=None, deterministic: bool = True):
        """inputs (B, S) -> masked-LM logits (B, S, V) in float32."""
        self._require(EncoderHead.MLM, "mlm_logits")
        x = self.encode(inputs, segment_ids=segment_ids, positions=positions, token_types=token_types,
                        deterministic=deterministic)
        if self.cfg.pooler and self.is_initializing():  # a pretraining checkpoint's pooler is kept
            self._pool(x, inputs, segment_ids)
        return self.mlm(x)

    def _require(self, head: EncoderHead, method: str) -> None:
        if self.cfg.head is not head:
            raise ValueError(f"{method} needs ModelConfig.head={head.value!r}; this model has "
                             f"head={self.cfg.head.value!r}")

    def __call__(self, inputs, *, segment_ids=None, positions=None, token_types=None, deterministic: bool = True):
        kwargs = dict(segment_ids=segment_ids, positions=positions, token_types=token_types,
                      deterministic=deterministic)
        if self.cfg.head is EncoderHead.CLASSIFIER:
            return self.classify(inputs, **kwargs)
        if self.cfg.head is EncoderHead.MLM:
            return self.mlm_logits(inputs, **kwargs)
        x = self.encode(inputs, **kwargs)
        if self.cfg.pooler and self.is_initializing():
            self._pool(x, inputs, segment_ids)
        return x


_MODELS = {
    Arch.ENCODER_DECODER: EncoderDecoder,
    Arch.DECODER_LM: DecoderLM,
    Arch.ENCODER_CLASSIFIER: EncoderClassifier,
}


def build_model(cfg: ModelConfig, policy: BackendPolicy | None = None) -> nn.Module:
    """The model class for ``cfg.arch``, configured by ``cfg`` with the backend choices of
    ``policy`` (default: :meth:`BackendPolicy.resolve` of ``cfg`` on JAX's default backend)."""
    cfg.require_vocab()
    policy = policy or BackendPolicy.resolve(cfg)
    return _MODELS[cfg.arch](policy.model_config(cfg))


def dummy_inputs(cfg: ModelConfig, batch_size: int = 1, length: int | None = None) -> tuple[jax.Array, ...]:
    """Positional arguments for ``model.init``: int32 tokens of shape (B, length)."""
    length = min(cfg.max_len, 8) if length is None else length
    tokens = jnp.ones((batch_size, length), jnp.int32)
    return (tokens, tokens) if cfg.arch is Arch.ENCODER_DECODER else (tokens,)


def param_shapes(cfg: ModelConfig):
    """Parameter shapes/dtypes (unboxed) without allocating memory (``jax.eval_shape``)."""
    model = build_model(cfg)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), *dummy_inputs(cfg)))
    return nn.meta.unbox(variables["params"])


def param_count(cfg: ModelConfig) -> int:
    """Number of parameters of the model ``cfg`` describes (computed without memory)."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(param_shapes(cfg)))
