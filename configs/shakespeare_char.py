"""Character-level Tiny Shakespeare with nanoGPT's CPU settings (karpathy/nanoGPT,
config/train_shakespeare_char.py, "baby GPT" on a MacBook): 4 layers, 4 heads, d_model 128,
context 64, batch 12, 2000 iterations, AdamW lr 1e-3 (beta2 0.99, weight decay 0.1, warm-up
100, cosine to lr/10), gradient clipping 1.0, no dropout.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.dataset = "tiny_shakespeare"
    config.data.tokenizer = "char"
    config.data.max_len = 64
    config.data.max_target_len = 64
    config.data.batch_size = 12
    config.data.eval_batch_size = 64
    config.data.max_eval_examples = 1280  # nanoGPT: eval_iters=20 batches

    config.model.arch = "decoder_lm"
    config.model.d_model = 128
    config.model.num_heads = 4
    config.model.num_layers = 4
    config.model.d_ff = 512
    config.model.max_len = 64
    config.model.dropout_rate = 0.0
    config.model.activation = "gelu"
    config.model.norm = "pre"
    config.model.positional = "learned"
    config.model.scale_embeddings = False
    config.model.layer_norm_eps = 1e-5

    config.train.num_steps = 2000
    config.train.optimizer = "adamw"
    config.train.schedule = "warmup_cosine"
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 100
    config.train.end_learning_rate_ratio = 0.1
    config.train.b2 = 0.99
    config.train.eps = 1e-8
    config.train.weight_decay = 0.1
    config.train.grad_clip_norm = 1.0
    config.train.label_smoothing = 0.0
    config.train.log_every_steps = 10
    config.train.eval_every_steps = 250
    config.train.checkpoint_every_steps = 500
    return config
