"""Live parity with transformers for BERT (skipped without torch and transformers): fresh random
BertModel / BertForSequenceClassification / BertForMaskedLM of shapes not in the fixtures,
imported into tfm: hidden states, classification and masked-LM logits within 2e-5, the gradient
of every parameter, padded batches equal to each row alone, and exports that transformers loads
back with the same logits."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import tfm  # noqa: E402
from tfm import interop  # noqa: E402
from tfm.interop import bert as bert_lib  # noqa: E402
from tfm.interop import convert  # noqa: E402

V = 53
SHAPES = {
    "d20_h5_l2_gelu_types3": dict(hidden_size=20, num_attention_heads=5, num_hidden_layers=2, intermediate_size=28,
                                  hidden_act="gelu", type_vocab_size=3, layer_norm_eps=1e-12,
                                  max_position_embeddings=19),
    "d24_h2_l1_relu_eps1e-5": dict(hidden_size=24, num_attention_heads=2, num_hidden_layers=1, intermediate_size=36,
                                   hidden_act="relu", type_vocab_size=2, layer_norm_eps=1e-5,
                                   max_position_embeddings=17),
}
CLASSES = {"BertModel": None, "BertForSequenceClassification": 3, "BertForMaskedLM": None}


def _hf_model(cls_name, shape, seed):
    torch.manual_seed(seed)
    kw = dict(SHAPES[shape], vocab_size=V, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if CLASSES[cls_name]:
        kw.update(num_labels=CLASSES[cls_name], id2label={0: "neg", 1: "neutral", 2: "pos"},
                  label2id={"neg": 0, "neutral": 1, "pos": 2})
    model = getattr(transformers, cls_name)(transformers.BertConfig(**kw)).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # random values everywhere: no term hides behind a zero bias or unit norm
        for name, p in model.named_parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def _inputs(rng, batch, length, types):
    tokens = rng.integers(0, V, size=(batch, length))
    token_types = rng.integers(0, types, size=(batch, length))
    lengths = rng.integers(2, length + 1, size=batch)
    lengths[0] = length
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int64)
    return tokens, token_types, mask


def _hf_out(model, cls_name, tokens, types, mask):
    out = model(input_ids=torch.tensor(tokens), token_type_ids=torch.tensor(types),
                attention_mask=torch.tensor(mask))
    return out.last_hidden_state if cls_name == "BertModel" else out.logits


def _tfm_apply(cfg, params, tokens, types, mask):
    return _jitted(cfg)(params, jnp.asarray(tokens, jnp.int32), jnp.asarray(types, jnp.int32),
                        jnp.asarray(mask, jnp.int32))


@functools.lru_cache(maxsize=None)
def _jitted(cfg):
    model = tfm.build_model(cfg)
    return jax.jit(lambda params, tokens, types, mask: model.apply(
        {"params": params}, tokens, token_types=types, segment_ids=mask))


@pytest.mark.parametrize("cls_name,shape", [("BertModel", "d20_h5_l2_gelu_types3"),
                                            ("BertForSequenceClassification", "d24_h2_l1_relu_eps1e-5"),
                                            ("BertForMaskedLM", "d20_h5_l2_gelu_types3")])
def test_outputs_and_gradients_match_transformers(tmp_path, cls_name, shape):
    model = _hf_model(cls_name, shape, seed=len(shape) + len(cls_name))
    model.save_pretrained(tmp_path, safe_serialization=True)
    cfg, params = interop.load_model(tmp_path, check=True, on_device=True)
    cfg = cfg.replace(grad_kernels="autodiff")
    assert cfg.head.value == {"BertModel": "none", "BertForSequenceClassification": "classifier",
                              "BertForMaskedLM": "mlm"}[cls_name]
    if CLASSES[cls_name]:
        assert cfg.class_names == ("neg", "neutral", "pos")
    rng = np.random.default_rng(7)
    tokens, types, mask = _inputs(rng, 3, 9, cfg.type_vocab_size)
    want = _hf_out(model, cls_name, tokens, types, mask)
    got = _tfm_apply(cfg, params, tokens, types, mask)
    real = mask.astype(bool) if want.dim() == 3 else np.ones(want.shape[0], bool)
    np.testing.assert_allclose(np.asarray(got)[real], want.detach().numpy()[real], atol=2e-5, rtol=0)

    # every parameter's gradient of sum(out * R) over the real positions
    r = rng.standard_normal(tuple(want.shape)).astype(np.float32)
    if want.dim() == 3:
        r *= mask[..., None]
    model.zero_grad()
    (want * torch.tensor(r)).sum().backward()
    torch_grads = {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}
    grads = jax.grad(lambda p: jnp.sum(_tfm_apply(cfg, p, tokens, types, mask) * jnp.asarray(r)))(params)
    mapped = bert_lib.params_to_hf(jax.tree.map(np.asarray, grads), cfg)
    if cfg.head.value == "mlm":  # the tied decoder's gradient lands on the word embeddings in both
        torch_grads.pop("cls.predictions.decoder.bias", None)
    # torch's nn.Embedding(padding_idx=pad_token_id) gives that row's look-ups no gradient
    # (transformers' training convention); tfm reserves no id, so the lookups of id 0 count there
    pad = model.config.pad_token_id
    for name in [n for n in torch_grads if n.endswith("word_embeddings.weight")]:
        mapped[name] = mapped[name].copy()
        mapped[name][pad] = torch_grads[name][pad] = 0
    floor = 1e-3 * max(float(np.abs(g).max()) for g in torch_grads.values())
    for name, g in torch_grads.items():
        assert name in mapped, name
        err = float(np.abs(mapped[name] - g).max()) / max(float(np.abs(g).max()), floor)
        assert err < 1e-4, (name, err)
    assert len(torch_grads) > 15

    # a padded batch equals each row alone
    for i in range(tokens.shape[0]):
        n = int(mask[i].sum())
        alone = np.asarray(_tfm_apply(cfg, params, tokens[i:i + 1, :n], types[i:i + 1, :n], mask[i:i + 1, :n]))
        row = np.asarray(got)[i:i + 1]
        np.testing.assert_allclose(row[:, :n] if row.ndim == 3 else row, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls_name", sorted(CLASSES))
def test_export_loads_in_transformers_with_the_same_outputs(tmp_path, cls_name):
    model = _hf_model(cls_name, "d24_h2_l1_relu_eps1e-5", seed=3)
    model.save_pretrained(tmp_path / "in", safe_serialization=True)
    cfg, params = interop.load_model(tmp_path / "in", on_device=True)
    # a "fine-tuned" change, so the export is not the imported file copied
    params = jax.tree.map(lambda x: x * 1.01, params)
    interop.save_pretrained((cfg, params, None), tmp_path / "out")
    back = getattr(transformers, cls_name).from_pretrained(tmp_path / "out").eval()
    rng = np.random.default_rng(1)
    tokens, types, mask = _inputs(rng, 2, 8, cfg.type_vocab_size)
    want = _hf_out(back, cls_name, tokens, types, mask).detach().numpy()
    got = np.asarray(_tfm_apply(cfg, params, tokens, types, mask))
    real = mask.astype(bool) if want.ndim == 3 else np.ones(want.shape[0], bool)
    np.testing.assert_allclose(got[real], want[real], atol=2e-5, rtol=0)
    if CLASSES[cls_name]:
        assert back.config.id2label == {0: "neg", 1: "neutral", 2: "pos"}
    cfg2, params2 = interop.load_model(tmp_path / "out")
    assert cfg2 == cfg
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_every_model_config_field_is_mapped_pinned_or_execution():
    assert convert.unaccounted_fields(bert_lib) == []


TRICKY = ["Hello, World!", "ÜNÏCÖDE çafé naïve", "don't stop-believing...", "中文字 mixed", "tab\tand\u00a0nbsp",
          "[MASK] the [CLS] fox", "  lots   of   space ", "42,000.5%", "Straße über", "ǅemal ﬁne"]


@pytest.mark.parametrize("lower", [True, False])
def test_wordpiece_from_vocab_txt_matches_transformers(tmp_path, lower):
    """vocab.txt + tokenizer_config.json's do_lower_case, as transformers' BertTokenizer reads them."""
    from tfm.data.hf_wordpiece import WordPieceTokenizer

    from interop_helpers import FIXTURES

    (tmp_path / "vocab.txt").write_bytes((FIXTURES / "bert_classifier" / "vocab.txt").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lower}))
    theirs = transformers.BertTokenizer.from_pretrained(tmp_path)
    ours = WordPieceTokenizer.from_hf_dir(tmp_path)
    for text in TRICKY:
        assert ours.encode_for_model([text])[0][0].tolist() == theirs(text)["input_ids"], text
    enc = theirs(TRICKY[0], TRICKY[1])
    ((ids, types),) = ours.encode_for_model([TRICKY[0]], [TRICKY[1]])
    assert ids.tolist() == enc["input_ids"] and types.tolist() == enc["token_type_ids"]
