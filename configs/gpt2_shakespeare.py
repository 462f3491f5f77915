"""Fine-tune a pretrained GPT-2 on Tiny Shakespeare (nanoGPT's config/finetune_shakespeare.py,
scaled to a CPU): start from a Hugging Face GPT-2 directory you downloaded yourself,

    python train.py --config=configs/gpt2_shakespeare.py --config.train.init_from=~/models/gpt2 \\
                    --workdir=workdirs/gpt2_shakespeare

The architecture and the tokenizer (GPT-2's byte-level BPE) come from the imported model
(``train.init_from``); the text is the local ../shared/data/tinyshakespeare.txt, encoded whole
(newlines are GPT-2 tokens). AdamW at a constant small learning rate (nanoGPT: 3e-5, no decay),
gradient clipping 1.0; re-running with the same workdir resumes as any run does. Afterwards:
``python -m tfm.cli generate --workdir workdirs/gpt2_shakespeare --prompt "ROMEO:"``, or
``python -m tfm.cli export --workdir workdirs/gpt2_shakespeare --out /tmp/gpt2-shakespeare`` for
transformers.
"""

import os

from configs import shakespeare_char

_TEXT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                      "tinyshakespeare.txt"))


def get_config():
    # nanoGPT's AdamW settings of configs/shakespeare_char.py (beta2 0.99, eps 1e-8, weight
    # decay 0.1, clipping 1.0, no label smoothing), at a constant fine-tuning learning rate.
    config = shakespeare_char.get_config()
    config.data.dataset = "text_file"
    config.data.text_file = _TEXT
    config.data.valid_fraction = 0.1
    config.data.tokenizer = "pretrained"
    config.data.max_len = 256
    config.data.max_target_len = 256
    config.data.batch_size = 8
    config.data.eval_batch_size = 8
    config.data.max_eval_examples = 64

    # Replaced by the imported model's architecture (train.init_from); set so that the config
    # validates before the import (a decoder-only model with GPT-2's context and dropout).
    config.model.max_len = 1024
    config.model.dropout_rate = 0.1
    config.model.attention_dropout_rate = 0.1

    config.train.init_from = ""  # required: --config.train.init_from=DIR
    config.train.num_steps = 200
    config.train.schedule = "constant"
    config.train.learning_rate = 3e-5
    config.train.warmup_steps = 0
    config.train.eval_every_steps = 50
    config.train.checkpoint_every_steps = 50
    return config
