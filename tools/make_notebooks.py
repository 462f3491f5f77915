"""Writes the notebooks in notebooks/ (stored without outputs): python tools/make_notebooks.py

The notebooks are generated so that their text lives in one reviewable Python file; edit here,
regenerate, and commit both.
"""

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s.strip()))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s.strip()))  # noqa: E731


def write(path):
    for i, cell in enumerate(cells):  # stable ids: regenerating changes only what was edited
        cell["id"] = f"cell-{i:02d}"
    nb = nbf.v4.new_notebook(
        cells=list(cells),
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    nbf.write(nb, path)
    cells.clear()


# ================================================================== 01 attention from scratch

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

tfm.compilation_cache.enable()   # keep compiled programs between runs (README: TFM_COMPILATION_CACHE)

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
Padding must not be attended to at all. Which positions are padding is data carried next to
the tokens (a validity mask, or segment ids with 0 = padding), never a token id: every id, 0
included, is a real token. Masks are boolean (True = may attend) and combine with a logical AND;
masked keys get exactly zero weight.
""")
code(r"""
tokens = jnp.array([[5, 9, 0, 7, 0, 0]])               # the first 0 is a real token ...
valid = jnp.array([[True, True, True, True, False, False]])  # ... the last two are padding
causal = tfm.causal_mask(6)[0, 0]
padding = jnp.broadcast_to(tfm.padding_mask(valid)[0, 0], (6, 6))
both = tfm.combine_masks(tfm.causal_mask(6), tfm.padding_mask(valid))[0, 0]
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, m, title in zip(axes, (causal, padding, both), ("causal", "padding", "causal AND padding")):
    ax.imshow(m, cmap="Greys", vmin=0, vmax=1); ax.set_title(title); ax.set_xlabel("key"); ax.set_ylabel("query")
plt.show()

w = tfm.attention_weights(Q[None, :, None], K[None, :, None], mask=both[None, None])[0, 0]
print(np.round(np.asarray(w), 2))
assert float(w[:, 4:].max()) == 0.0 and float(jnp.triu(w, 1).max()) == 0.0
""")

write("notebooks/01_attention_from_scratch.ipynb")


# ================================================================== 02 translate numbers
md(r"""
# Translating numbers: English words → German words

tfm's embedded default task. Integers from 0 to 999,999 written in English are translated into
German number words:

* "three hundred twenty-one" → "dreihunderteinundzwanzig"

German says the units before the tens ("ein-und-zwanzig": one-and-twenty), so the model has to
learn a *non-monotonic* alignment — a real translation problem in miniature. We train the
paper's encoder-decoder (small), watch the loss, translate held-out numbers with beam search,
and look at where the decoder's cross-attention looks.

The numbers people type first are the small ones, but only 0.1% of 0..999,999 is below 1,000.
So the data is organised by magnitude: validation and test hold out numbers of every bucket
(0-99, 100-999, 1,000-9,999, 10,000-99,999, 100,000-999,999; at most 10% of a bucket), training
samples by number of digits with temperature 3 (the 1- and 2-digit numbers are 3.5% of the
examples instead of 0.01%), and accuracy is reported per bucket, the worst bucket being the
headline.

Set `TFM_NOTEBOOK_SMALL=1` for a short run (the test suite does); the full budget (the steps of
`configs/numbers.py`; its run time is in `benchmarks/README.md`) reaches at least 99% exact match
in every bucket.
""")
code(r"""
import os

import matplotlib.pyplot as plt
import numpy as np

import tfm
from tfm import metrics
from tfm.data.numbers import BUCKET_LABELS, bucket_labels, english, german, split_numbers
from tfm.training import RunConfig, default_config_dict, run
from tfm.training.writer import read_metrics

tfm.compilation_cache.enable()   # keep compiled programs between runs (README: TFM_COMPILATION_CACHE)

SMALL = os.environ.get("TFM_NOTEBOOK_SMALL") == "1"
WORKDIR = os.path.join(os.environ.get("TFM_NOTEBOOK_WORKDIR", "workdirs"), "notebook_numbers")
for n in (21, 321, 1_000, 700_017):
    print(f"{n:>7}  {english(n)!r:45} -> {german(n)!r}")
""")
md(r"""
## Configure and train

The same settings as `configs/numbers.py`: a post-LN encoder-decoder with 2+2 layers of width
128, the paper's Adam (β₂ = 0.98, ε = 1e-9) and label smoothing 0.1, a linear warm-up then
cosine decay to zero (on a budget this short it beats the paper's inverse-square-root schedule,
which never anneals), and no dropout (a million distinct training numbers cannot be memorised).
`run` writes everything to the workdir; running this cell again resumes there.
""")
code(r"""
cd = default_config_dict()            # every default, from the dataclasses
cd.model.update(d_model=128, num_heads=4, num_layers=2, d_ff=512, max_len=64, dropout_rate=0.0)
cd.train.update(
    num_steps=200 if SMALL else 4000,
    schedule="warmup_cosine",
    learning_rate=3e-3,
    end_learning_rate_ratio=0.0,
    warmup_steps=50 if SMALL else 400,
    log_every_steps=20,
    eval_every_steps=100 if SMALL else 1000,
    checkpoint_every_steps=100 if SMALL else 500,
    eval_decode_examples=128 if SMALL else 2000,   # validation is ordered round-robin by magnitude
    progress_bar=False,
)
config = RunConfig.from_config_dict(cd)   # validated here, before anything compiles
result = run(config, WORKDIR)
print("finished at step", result["step"], "| last eval:", {k: round(v, 4) for k, v in result["eval"].items()})
""")
code(r"""
train = read_metrics(WORKDIR, "train")
evals = read_metrics(WORKDIR, "eval")
fig, ax = plt.subplots(figsize=(6, 3.5))
steps = sorted(train)
ax.plot(steps, [train[s]["loss"] for s in steps], label="train (label-smoothed)")
steps = sorted(evals)
ax.plot(steps, [evals[s]["loss"] for s in steps], "o-", label="validation")
ax.set_xlabel("step"); ax.set_ylabel("cross-entropy"); ax.set_yscale("log"); ax.legend(); ax.set_title("loss")
plt.show()
""")
md(r"""
## Accuracy by magnitude

The test split holds numbers the model never saw, from every magnitude bucket (ordered
round-robin over the buckets, so any prefix covers them all). Greedy decoding, scored per
bucket; next to it the validation figures the training loop logged at its last evaluation
(`metrics.jsonl` and TensorBoard: `eval/exact_match/0-99`, ...) and its score on every number
below 1,000, the ones people type first (training numbers included). The headline is the worst
bucket, not the average.
""")
code(r"""
model = tfm.inference.load(WORKDIR)        # config + tokenizer + newest checkpoint
test_numbers = split_numbers()["test"][: 100 if SMALL else 2000]   # never seen in training
sources = [english(int(n)) for n in test_numbers]
references = [german(int(n)) for n in test_numbers]
hypotheses = tfm.translate(model, sources, beam_size=1)
test = metrics.text_metrics_by_group(hypotheses, references, bucket_labels(test_numbers), tokenize="char")
last = evals[max(evals)]                   # the loop's last evaluation (validation, below 1,000)

fmt = lambda record, key: f"{100 * record[key]:6.2f}%" if key in record else "      -"
print(f"{'bucket':>14}  {'validation':>10}  {'test':>8}  {'test BLEU':>9}  {'all < 1,000':>11}")
for b in BUCKET_LABELS:
    bleu = f"{test[f'bleu/{b}']:9.2f}" if f"bleu/{b}" in test else "        -"
    print(f"{b:>14}  {fmt(last, f'exact_match/{b}'):>10}  {fmt(test, f'exact_match/{b}'):>8}  {bleu}  "
          f"{fmt(last, f'below_1000/exact_match/{b}'):>11}")
print(f"{'worst bucket':>14}  {fmt(last, 'worst_exact_match'):>10}  {fmt(test, 'worst_exact_match'):>8}  "
      f"{'':9}  {fmt(last, 'below_1000/worst_exact_match'):>11}")
print(f"{'all':>14}  {fmt(last, 'exact_match'):>10}  {fmt(test, 'exact_match'):>8}  {test['bleu']:9.2f}  "
      f"{fmt(last, 'below_1000/exact_match'):>11}")
for src, hyp, ref in list(zip(sources, hypotheses, references))[:5]:
    print(f"{'✓' if hyp == ref else '✗'} {src!r} -> {hyp!r}" + ("" if hyp == ref else f"   (reference {ref!r})"))
""")
md(r"""
Beam search with the paper's settings (beam 4, length penalty α = 0.6) is what `tfm.translate`
does by default. Input the model cannot know -- a word or character that never occurred in its
training text -- is still translated, but with a warning that names it:
""")
code(r"""
import warnings

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    print(tfm.translate(model, ["twenty-one", "one hundred and five"]))
for w in caught:
    print(f"{w.category.__name__}: {w.message}")
""")
md(r"""
## Where does the decoder look?

The cross-attention weights of the last decoder layer, averaged over heads: each row is an
output piece, each column a source piece. The shared SentencePiece vocabulary often keeps a
whole "vierundfünfzig" as one piece, but sometimes splits it ("fünfund" + "vierzig..."). We pick
a held-out number that the model translated correctly and whose German splits that way: the
decoder must read "five" *before* "forty", which shows up as a step back in the alignment.
""")
code(r"""
tok = model.tokenizer
pieces = lambda text: [tok.decode([i]) for i in tok.encode(text)]
reordered = [
    (src, hyp) for src, hyp, ref in zip(sources, hypotheses, references)
    if hyp == ref and any(p.endswith("und") for p in pieces(ref))   # a units piece of its own
]
source, output = reordered[0] if reordered else (english(45_678), tfm.translate(model, english(45_678)))
src_ids = tok.encode(source) + [tok.eos_id]
out_ids = tok.encode(output) + [tok.eos_id]
inputs = np.array([src_ids], np.int32)
decoder_inputs = np.array([[tok.bos_id] + out_ids[:-1]], np.int32)
maps = tfm.inference.attention_maps(model, inputs, decoder_inputs)
name = [k for k in maps if "cross_attention" in k][-1]
weights = np.asarray(maps[name])
weights = weights[-1] if weights.ndim == 5 else weights   # scanned layers carry a layer axis
weights = weights[0].mean(0)                              # (T, S), averaged over heads
piece = lambda i: tok.decode([i]) if i != tok.eos_id else "</s>"
fig, ax = plt.subplots(figsize=(0.5 * len(src_ids) + 2, 0.4 * len(out_ids) + 1.5))
ax.imshow(weights, cmap="Blues")
ax.set_xticks(range(len(src_ids)), [piece(i) for i in src_ids], rotation=60, ha="right")
ax.set_yticks(range(len(out_ids)), [piece(i) for i in out_ids])
ax.set_xlabel("source (English)"); ax.set_ylabel("output (German)")
ax.set_title(f"{name}\n{source!r} -> {output!r}", fontsize=9)
plt.show()
""")
write("notebooks/02_translate_numbers.ipynb")


# ================================================================== 03 shakespeare
md(r"""
# A character-level Shakespeare language model

A decoder-only Transformer (GPT-style: pre-LN, GELU, learned positions) trained on Tiny
Shakespeare, one character at a time, with nanoGPT's CPU settings scaled down for a notebook.
The text comes from the local copy `../shared/data/tinyshakespeare.txt` when it is there
(or `TFM_TEXT_FILE`), else from TensorFlow Datasets' `tiny_shakespeare` (which downloads).
""")
code(r"""
import math
import os
import pathlib

import matplotlib.pyplot as plt

import tfm
from tfm.training import RunConfig, default_config_dict, run
from tfm.training.writer import read_metrics

tfm.compilation_cache.enable()   # keep compiled programs between runs (README: TFM_COMPILATION_CACHE)

SMALL = os.environ.get("TFM_NOTEBOOK_SMALL") == "1"
WORKDIR = os.path.join(os.environ.get("TFM_NOTEBOOK_WORKDIR", "workdirs"), "notebook_shakespeare")

candidates = [os.environ.get("TFM_TEXT_FILE", ""),
              pathlib.Path(tfm.__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt",
              pathlib.Path("../shared/data/tinyshakespeare.txt")]
text_file = next((str(p) for p in candidates if p and pathlib.Path(p).is_file()), "")
print("data:", text_file or "TFDS tiny_shakespeare")
""")
code(r"""
cd = default_config_dict()
cd.data.update(dataset="text_file" if text_file else "tiny_shakespeare", text_file=text_file,
               tokenizer="char", max_len=64, max_target_len=64, batch_size=12,
               eval_batch_size=64, max_eval_examples=256 if SMALL else 1280)
cd.model.update(arch="decoder_lm", d_model=64 if SMALL else 128, num_heads=4,
                num_layers=2 if SMALL else 4, d_ff=256 if SMALL else 512, max_len=64,
                dropout_rate=0.0, activation="gelu", norm="pre", positional="learned",
                scale_embeddings=False, layer_norm_eps=1e-5)
cd.train.update(num_steps=300 if SMALL else 2000, optimizer="adamw", schedule="warmup_cosine",
                learning_rate=3e-3 if SMALL else 1e-3, warmup_steps=50 if SMALL else 100,
                b2=0.99, eps=1e-8, weight_decay=0.1, grad_clip_norm=1.0, label_smoothing=0.0,
                log_every_steps=10, eval_every_steps=100 if SMALL else 250,
                checkpoint_every_steps=1000, progress_bar=False)
result = run(RunConfig.from_config_dict(cd), WORKDIR)
print("finished at step", result["step"], "| validation:", {k: round(v, 3) for k, v in result["eval"].items()})
""")
code(r"""
train = read_metrics(WORKDIR, "train")
evals = read_metrics(WORKDIR, "eval")
fig, ax = plt.subplots(figsize=(6, 3.5))
steps = sorted(train)
ax.plot(steps, [train[s]["loss"] for s in steps], label="train")
steps = sorted(evals)
ax.plot(steps, [evals[s]["loss"] for s in steps], "o-", label="validation")
ax.axhline(math.log(65), color="gray", ls=":", label="uniform over 65 characters")
ax.set_xlabel("step"); ax.set_ylabel("cross-entropy (nats/char)"); ax.legend(); ax.set_title("Tiny Shakespeare")
plt.show()
last = evals[max(evals)]
print(f"validation loss {last['loss']:.3f} nats/char = {last['loss'] / math.log(2):.3f} bits/char")
""")
md(r"""
## Sample

Temperature 0.8 sampling from the KV-cached decoder (compiled: no Python loop per token).
Same seed, same text.
""")
code(r"""
lm = tfm.inference.load(WORKDIR)
sample = tfm.generate(lm, "ROMEO:", max_new_tokens=100 if SMALL else 400, temperature=0.8, seed=0)
print(sample)
assert sample == tfm.generate(lm, "ROMEO:", max_new_tokens=100 if SMALL else 400, temperature=0.8, seed=0)
""")
write("notebooks/03_shakespeare_char.ipynb")


# ================================================================== 04 Llama family

md(r"""
# Llama, Mistral and Qwen2 checkpoints: load, generate, fine-tune, export

tfm imports Hugging Face directories of `model_type` llama, mistral and qwen2 (config.json,
safetensors, tokenizer.json) without torch. Their blocks are tfm's own with the Llama-lineage
options of `ModelConfig`: RMSNorm, a SwiGLU feed-forward, grouped-query attention
(`num_kv_heads`), rotate-half rotary positions with `rope_theta` and Llama 3's `rope_scaling`,
q/k/v biases (Qwen2), tied or untied output heads.

This notebook uses the tiny random llama checkpoint of the test fixtures (2 layers, 4 query
heads sharing 2 key/value heads, Llama 3 rope scaling) so that it runs anywhere in a minute;
set `TFM_LLAMA_DIR` to a real directory (TinyLlama, SmolLM, Qwen2.5-0.5B, ...) to use one.
""")
code(r"""
import os
import pathlib

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import tfm
from tfm.training import RunConfig, default_config_dict, run
from tfm.training.writer import read_metrics

tfm.compilation_cache.enable()   # keep compiled programs between runs (README: TFM_COMPILATION_CACHE)

SMALL = os.environ.get("TFM_NOTEBOOK_SMALL") == "1"
WORKDIR = pathlib.Path(os.environ.get("TFM_NOTEBOOK_WORKDIR", "workdirs")) / "notebook_llama"
MODEL_DIR = os.environ.get("TFM_LLAMA_DIR") or str(
    pathlib.Path(tfm.__file__).resolve().parents[1] / "tests" / "fixtures" / "hf" / "llama")

lm = tfm.from_pretrained(MODEL_DIR)
c = lm.config
print(f"{lm.model_type}: D={c.d_model}, {c.num_layers} layers, {c.num_heads} heads / {c.kv_heads} kv heads, "
      f"{c.norm_kind.value}, gated FFN {c.gated_ffn}, rope {c.rope_layout.value} theta {c.rope_base:g}, "
      f"rope_scaling {c.rope_scaling}, tied head {c.tie_output}")
""")
md(r"""
## Generate

Greedy decoding from the KV cache (which holds only the key/value heads). The tokenizer is the
directory's `tokenizer.json`; since it puts `<s>` first, so does `tfm.generate`.
""")
code(r"""
prompts = ["The weather is nice", "She reads a book in the"]
for p, text in zip(prompts, tfm.generate(lm, prompts, max_new_tokens=12, temperature=0.0)):
    print(repr(p), "->", repr(text))
""")
md(r"""
## Fine-tune a few steps

`train.init_from` starts a run from the imported parameters and tokenizer; the architecture
comes from config.json. The run's workdir holds everything it needs: resuming does not read the
imported directory again.
""")
code(r"""
WORKDIR.mkdir(parents=True, exist_ok=True)
text_file = WORKDIR / "text.txt"
text_file.write_text("The quick brown fox jumps over the lazy dog.\nHow are you today? I am fine, thank you.\n" * 40)
cd = default_config_dict()
cd.data.update(dataset="text_file", text_file=str(text_file), tokenizer="pretrained", valid_fraction=0.1,
               max_len=32, max_target_len=32, batch_size=4, eval_batch_size=4, max_eval_examples=8)
cd.model.update(arch="decoder_lm", dropout_rate=0.0, attention_dropout_rate=0.0)
cd.train.update(init_from=MODEL_DIR, num_steps=20 if SMALL else 200, learning_rate=3e-3, schedule="constant",
                warmup_steps=0, log_every_steps=2, eval_every_steps=0, eval_at_end=False,
                checkpoint_every_steps=10, progress_bar=False)
result = run(RunConfig.from_config_dict(cd), str(WORKDIR / "run"))
train = read_metrics(str(WORKDIR / "run"), "train")
steps = sorted(train)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(steps, [train[s]["loss"] for s in steps])
ax.set_xlabel("step"); ax.set_ylabel("training loss (nats/token)"); ax.set_title("fine-tuning from the import")
plt.show()
tuned = tfm.inference.load(str(WORKDIR / "run"))
print(tfm.generate(tuned, "The quick brown", max_new_tokens=12, temperature=0.0))
""")
md(r"""
## Export

`tfm.save_pretrained` writes the Hugging Face layout again (as llama; `model_type="mistral"` or
`"qwen2"` when the model fits those), which transformers' `from_pretrained` loads. Exporting and
importing gives bitwise the same parameters.
""")
code(r"""
out = WORKDIR / "export"
print(tfm.save_pretrained(tuned, out))
back = tfm.from_pretrained(out)
tokens = jnp.asarray([[1, 20, 30, 40, 50]], jnp.int32)
a = tuned.model.apply({"params": tuned.params}, tokens)
b = back.model.apply({"params": back.params}, tokens)
assert back.model_type == "llama" and np.array_equal(np.asarray(a), np.asarray(b))
print("export -> import: identical logits")
""")
write("notebooks/04_llama_family.ipynb")


# ================================================================== 05 BERT: classify, fill masks, fine-tune
md(r"""
# BERT in tfm: classify, fill masks, embed, fine-tune on a local file, export

tfm imports BERT checkpoints in Hugging Face's layout (`BertModel`, `BertForSequenceClassification`,
`BertForMaskedLM`: `config.json`, `model.safetensors`, `tokenizer.json` or `vocab.txt`) into its
encoder-only model: post-LN blocks, learned positions, token-type embeddings, a LayerNorm on the
embeddings, and the head the checkpoint has (pooler + classifier, masked-LM, or none).

This notebook runs on the tiny random checkpoints of `tests/fixtures/hf` (saved by transformers),
so its predictions are noise; set `TFM_BERT_DIR` to a directory holding real ones (e.g. a
downloaded `bert-base-uncased` as `bert_mlm`) for meaningful outputs. Everything else is the same.
""")
code(r"""
import os
import pathlib

import matplotlib.pyplot as plt
import numpy as np

import tfm
from tfm.training import RunConfig, default_config_dict, run

tfm.compilation_cache.enable()   # keep compiled programs between runs (README: TFM_COMPILATION_CACHE)

SMALL = os.environ.get("TFM_NOTEBOOK_SMALL") == "1"
MODELS = pathlib.Path(os.environ.get("TFM_BERT_DIR", pathlib.Path(tfm.__file__).resolve().parents[1] / "tests" / "fixtures" / "hf"))
WORKDIR = pathlib.Path(os.environ.get("TFM_NOTEBOOK_WORKDIR", "workdirs")) / "notebook_bert"
classifier = tfm.from_pretrained(MODELS / "bert_classifier")
print(classifier.config.head, classifier.config.class_names, classifier.tokenizer.vocab_size)
""")
md(r"""
## Classify texts and sentence pairs

`tfm.classify` takes texts or `(text, text)` pairs (encoded `[CLS] a [SEP] b [SEP]` with token
types 0 and 1) and returns the label and the probability of each class, named by the checkpoint's
`id2label`.
""")
code(r"""
inputs = ["The weather is nice and the sun is shining.", ("How are you today?", "I am fine, thank you.")]
results = tfm.classify(classifier, inputs)
for x, r in zip(inputs, results):
    print(r["label"], round(r["score"], 3), x)
fig, ax = plt.subplots(figsize=(5, 2.5))
names = list(results[0]["probabilities"])
for i, r in enumerate(results):
    ax.bar(np.arange(len(names)) + 0.4 * i, list(r["probabilities"].values()), width=0.4, label=f"input {i}")
ax.set_xticks(np.arange(len(names)) + 0.2, names); ax.set_ylabel("probability"); ax.legend(); plt.show()
""")
md(r"""
## Fill a mask

A masked-LM checkpoint (`BertForMaskedLM`, or `bert-base-uncased` itself) predicts the token at
each `[MASK]`.
""")
code(r"""
mlm = tfm.from_pretrained(MODELS / "bert_mlm")
for c in tfm.fill_mask(mlm, "The quick brown [MASK] jumps over the lazy dog!", top_k=5):
    print(f"{c['token']:>10}  {c['score']:.3f}   {c['sequence']}")
""")
md(r"""
## Sentence embeddings

`tfm.embed` averages the last hidden states over each text's tokens (`pooling="mean"`) or takes
the `[CLS]` state (`pooling="cls"`).
""")
code(r"""
base = tfm.from_pretrained(MODELS / "bert_base")
texts = ["The cat sat on the mat.", "A cat was sitting on a mat.", "Stock prices fell sharply today."]
E = tfm.embed(base, texts, pooling="mean")
E = E / np.linalg.norm(E, axis=1, keepdims=True)
plt.figure(figsize=(3, 3)); plt.imshow(E @ E.T, vmin=-1, vmax=1, cmap="RdBu"); plt.colorbar()
plt.title("cosine similarity"); plt.show()
""")
md(r"""
## Fine-tune a classifier on a local file

A TSV with a header row (`label`, `text`); CSV and JSONL work the same. The imported encoder
(here the bare `BertModel`) gets the pooler and a fresh classifier for the file's labels;
`configs/bert_classify.py` holds the full-size settings. A row with a missing column, an empty
text or an unknown label would be named in the log (file:line) and left out.
""")
code(r"""
rng = np.random.default_rng(0)
words = "the quick brown fox jumps over lazy dog how are you today weather is nice".split()
def write(path, n):
    rows = ["label\ttext"]
    for _ in range(n):
        yes = bool(rng.integers(2))
        rows.append(("yes\thello " if yes else "no\tnumbers ") + " ".join(rng.choice(words, 4)))
    path.write_text("\n".join(rows) + "\n")
    return str(path)
WORKDIR.mkdir(parents=True, exist_ok=True)
train_file, valid_file = write(WORKDIR / "train.tsv", 200), write(WORKDIR / "valid.tsv", 64)

cd = default_config_dict()
cd.data.update(dataset="classification_file", classification_file=train_file,
               classification_valid_file=valid_file, tokenizer="pretrained", max_len=16,
               max_target_len=16, batch_size=16, eval_batch_size=32)
cd.model.update(arch="encoder_classifier", dropout_rate=0.0, attention_dropout_rate=0.0)
cd.train.update(init_from=str(MODELS / "bert_base"), num_steps=40 if SMALL else 200, optimizer="adamw",
                schedule="warmup_cosine", learning_rate=3e-3, warmup_steps=5, strategy="single",
                eval_every_steps=20, checkpoint_every_steps=20, log_every_steps=10, progress_bar=False,
                eval_decode_examples=0, label_smoothing=0.0)
result = run(RunConfig.from_config_dict(cd), str(WORKDIR / "run"))
print("validation accuracy:", result["eval"]["accuracy"])
tuned = tfm.inference.load(WORKDIR / "run")
print(tfm.classify(tuned, ["hello the quick fox", "numbers the lazy dog"]))
""")
md(r"""
## Export

The fine-tuned classifier is written in Hugging Face's layout (a `BertForSequenceClassification`
with its `id2label`, and the WordPiece tokenizer); transformers loads it with the same logits.
""")
code(r"""
out = WORKDIR / "export"
if out.exists():
    import shutil; shutil.rmtree(out)
print(tfm.save_pretrained(tuned, out))
print((out / "config.json").read_text()[:400])
""")
write("notebooks/05_bert.ipynb")
