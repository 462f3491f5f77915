"""Sentence sentiment (GLUE SST-2) with a small encoder-only classifier trained from scratch."""

from configs import default


def get_config():
    config = default.get_config()
    config.data.dataset = "sst2"
    config.data.tokenizer = "sentencepiece"
    config.data.vocab_size = 8000
    config.data.max_len = 64
    config.data.max_target_len = 64
    config.data.batch_size = 64
    config.data.eval_batch_size = 128

    config.model.arch = "encoder_classifier"
    config.model.d_model = 256
    config.model.num_heads = 4
    config.model.num_layers = 4
    config.model.d_ff = 1024
    config.model.max_len = 64
    config.model.norm = "pre"
    config.model.num_classes = 2

    config.train.num_steps = 5000
    config.train.optimizer = "adamw"
    config.train.schedule = "warmup_cosine"
    config.train.learning_rate = 5e-4
    config.train.warmup_steps = 500
    config.train.weight_decay = 0.01
    config.train.grad_clip_norm = 1.0
    config.train.label_smoothing = 0.0
    config.train.eval_every_steps = 500
    config.train.checkpoint_every_steps = 1000
    config.train.eval_decode_examples = 0
    return config
