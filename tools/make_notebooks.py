"""Writes notebooks/01_attention_from_scratch.ipynb (stored without outputs)."""

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s.strip()))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s.strip()))  # noqa: E731

md(r"""
# Attention from scratch

The core of "Attention Is All You Need" (Vaswani et al. 2017), step by step, with tfm's pure
functions checked against each step:

1. queries, keys and values as linear maps of the embeddings,
2. scores $QK^\top$, scaled by $1/\sqrt{d_k}$ (and why),
3. softmax and the weighted sum of values,
4. several heads, concatenated and mixed by $W^O$,
5. the sinusoidal positional encoding,
6. causal and padding masks.

Axis names used throughout: B batch, T query length, S key length, N heads, H head dim, D model dim.
""")
code(r"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import tfm

key = jax.random.key(0)
T, D = 6, 16          # 6 tokens, model width 16
words = ["the", "cat", "sat", "on", "the", "mat"]
X = jax.random.normal(key, (T, D))   # stand-in token embeddings, one row per token
print("embeddings X:", X.shape)
""")
md(r"""
## 1. Queries, keys and values are linear maps of the embeddings

Each token's embedding $x_t$ is projected three ways: $q_t = x_t W^Q$ (what it looks for),
$k_t = x_t W^K$ (what it offers to be found by) and $v_t = x_t W^V$ (what it passes on).
""")
code(r"""
d_k = 8
kq, kk, kv = jax.random.split(jax.random.key(1), 3)
W_Q = jax.random.normal(kq, (D, d_k)) / np.sqrt(D)
W_K = jax.random.normal(kk, (D, d_k)) / np.sqrt(D)
W_V = jax.random.normal(kv, (D, d_k)) / np.sqrt(D)
Q, K, V = X @ W_Q, X @ W_K, X @ W_V     # (T, d_k) each
print(Q.shape, K.shape, V.shape)
""")
md(r"""
## 2. Scores, and why they are scaled by $\sqrt{d_k}$

The score of query $t$ against key $s$ is the dot product $q_t \cdot k_s$. If the entries of
$q$ and $k$ have mean 0 and variance 1, the dot product has variance $d_k$: it grows with the
width. Softmax of large numbers saturates — one weight goes to 1, the others to 0, and the
gradients vanish. Dividing by $\sqrt{d_k}$ brings the variance back to 1 (section 3.2.1).
""")
code(r"""
rng = np.random.default_rng(0)
dims = [4, 16, 64, 256, 1024, 4096]
unscaled, scaled = [], []
for d in dims:
    q = rng.standard_normal((200, d))
    k = rng.standard_normal((200, 10, d))
    s = np.einsum("bd,bsd->bs", q, k)
    for out, logits in ((unscaled, s), (scaled, s / np.sqrt(d))):
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        out.append(w.max(-1).mean())  # how much of the weight the top key takes
fig, ax = plt.subplots(figsize=(5, 3))
ax.semilogx(dims, unscaled, "o-", label=r"softmax$(q k^\top)$")
ax.semilogx(dims, scaled, "s-", label=r"softmax$(q k^\top / \sqrt{d_k})$")
ax.axhline(0.1, color="gray", ls=":", label="uniform over 10 keys")
ax.set_xlabel("$d_k$"); ax.set_ylabel("mean largest weight"); ax.legend(); ax.set_title("Softmax saturation")
plt.show()
print("largest weight, unscaled:", np.round(unscaled, 3))
print("largest weight, scaled:  ", np.round(scaled, 3))
assert unscaled[-1] > 0.9 and scaled[-1] < 0.6
""")
md(r"""
## 3. Softmax and the weighted sum of values

$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}(QK^\top/\sqrt{d_k})\,V$ (eq. 1). Each output row is
a mixture of the value rows, weighted by how well the query matched each key.
""")
code(r"""
scores = Q @ K.T / np.sqrt(d_k)                       # (T, S)
weights = jax.nn.softmax(scores, axis=-1)            # rows sum to 1
out = weights @ V                                    # (T, d_k)

# tfm's pure function works on (B, T, N, H): add a batch and a head axis
ours = tfm.scaled_dot_product_attention(Q[None, :, None], K[None, :, None], V[None, :, None])[0, :, 0]
print("max |difference| to tfm:", float(jnp.abs(out - ours).max()))
assert jnp.allclose(out, ours, atol=1e-5)

fig, ax = plt.subplots(figsize=(4, 4))
ax.imshow(weights, cmap="viridis")
ax.set_xticks(range(T), words); ax.set_yticks(range(T), words)
ax.set_xlabel("key"); ax.set_ylabel("query"); ax.set_title("attention weights")
plt.show()
""")
md(r"""
## 4. Multi-head attention

Instead of one attention with width $d_{model}$, use $h$ heads of width $d_k = d_{model}/h$, each
with its own $W_i^Q, W_i^K, W_i^V$, run them in parallel, concatenate, and mix with $W^O$:
$\mathrm{MultiHead} = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_h) W^O$.
Below, the same computation by hand and with `tfm.MultiHeadAttention`, sharing its weights.
""")
code(r"""
N, H = 4, D // 4
mha = tfm.MultiHeadAttention(num_heads=N, head_dim=H)
# parameters carry logical axis names for sharding; unbox to plain arrays
params = nn.meta.unbox(mha.init(jax.random.key(2), X[None]))["params"]

heads = []
for i in range(N):
    q = X @ params["query"]["kernel"][:, i] + params["query"]["bias"][i]   # (T, H)
    k = X @ params["key"]["kernel"][:, i] + params["key"]["bias"][i]
    v = X @ params["value"]["kernel"][:, i] + params["value"]["bias"][i]
    heads.append(jax.nn.softmax(q @ k.T / np.sqrt(H), axis=-1) @ v)
concat = jnp.concatenate(heads, axis=-1)                                   # (T, N*H)
by_hand = concat @ params["out"]["kernel"].reshape(N * H, D) + params["out"]["bias"]

by_tfm = mha.apply({"params": params}, X[None])[0]
print("max |difference|:", float(jnp.abs(by_hand - by_tfm).max()))
assert jnp.allclose(by_hand, by_tfm, atol=1e-5)
""")
md(r"""
## 5. Positional encoding

Attention by itself ignores order: permuting the tokens permutes the outputs. The paper adds
$PE(pos, 2i) = \sin(pos/10000^{2i/d_{model}})$ and $PE(pos, 2i+1) = \cos(pos/10000^{2i/d_{model}})$
to the embeddings: each pair of columns is a sinusoid whose wavelength grows geometrically from
$2\pi$ to $10000 \cdot 2\pi$.
""")
code(r"""
pe = tfm.sinusoidal_encoding(jnp.arange(100), 64)        # (positions, d_model)
fig, ax = plt.subplots(figsize=(7, 3))
im = ax.imshow(pe.T, aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
ax.set_xlabel("position"); ax.set_ylabel("dimension"); ax.set_title("sinusoidal positional encoding")
fig.colorbar(im); plt.show()
assert np.isclose(pe[1, 0], np.sin(1.0)) and np.isclose(pe[1, 1], np.cos(1.0))
""")
md(r"""
## 6. Masks

A decoder must not look at future tokens: the causal mask lets query $t$ see keys $s \le t$.
Padding tokens (id 0) must not be attended to at all. Masks are boolean (True = may attend) and
combine with a logical AND; masked keys get exactly zero weight.
""")
code(r"""
tokens = jnp.array([[5, 9, 4, 7, 0, 0]])               # two padding tokens at the end
causal = tfm.causal_mask(6)[0, 0]
padding = jnp.broadcast_to(tfm.padding_mask(tokens)[0, 0], (6, 6))
both = tfm.combine_masks(tfm.causal_mask(6), tfm.padding_mask(tokens))[0, 0]
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, m, title in zip(axes, (causal, padding, both), ("causal", "padding", "causal AND padding")):
    ax.imshow(m, cmap="Greys", vmin=0, vmax=1); ax.set_title(title); ax.set_xlabel("key"); ax.set_ylabel("query")
plt.show()

w = tfm.attention_weights(Q[None, :, None], K[None, :, None], mask=both[None, None])[0, 0]
print(np.round(np.asarray(w), 2))
assert float(w[:, 4:].max()) == 0.0 and float(jnp.triu(w, 1).max()) == 0.0
""")

nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
nbf.write(nb, "notebooks/01_attention_from_scratch.ipynb")
