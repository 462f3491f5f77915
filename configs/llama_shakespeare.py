"""Fine-tune a Llama-family model (model_type llama, mistral or qwen2: TinyLlama, SmolLM,
Qwen2.5-0.5B, ...) on Tiny Shakespeare: configs/gpt2_shakespeare.py with the Llama lineage's
training settings (no dropout: these models have none, and an export as Llama needs
``dropout_rate=0``)::

    python train.py --config=configs/llama_shakespeare.py --config.train.init_from=~/models/SmolLM-135M \\
                    --workdir=workdirs/llama_shakespeare

The architecture and the tokenizer (its tokenizer.json, with the checkpoint's BOS/EOS ids) come
from the imported directory; re-running with the same workdir resumes (the imported directory is
no longer needed then). Afterwards ``python -m tfm.cli generate --workdir workdirs/llama_shakespeare
--prompt "ROMEO:"`` or ``python -m tfm.cli export --workdir workdirs/llama_shakespeare --out DIR``.
"""

from configs import gpt2_shakespeare


def get_config():
    config = gpt2_shakespeare.get_config()
    config.model.dropout_rate = 0.0
    config.model.attention_dropout_rate = 0.0
    return config
