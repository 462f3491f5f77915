"""Fine-tune a pretrained BERT as a text classifier on a local CSV / TSV / JSONL file:

    python train.py --config=configs/bert_classify.py --config.train.init_from=~/models/bert-base-uncased \\
        --config.data.classification_file=reviews.tsv --workdir=workdirs/bert_reviews

The file has a header row (CSV / TSV) or one JSON object per line (JSONL), with the columns
``text`` and ``label`` (``--config.data.text_column`` / ``label_column`` to rename); labels are
names or integer ids, and the classes are the file's distinct labels (or
``--config.data.label_names``). A fixed-seed 10% is held out for validation, or give
``--config.data.classification_valid_file``. The architecture and the WordPiece tokenizer come
from the imported model (``train.init_from``: BertModel, BertForMaskedLM or an earlier
BertForSequenceClassification); its head is replaced by the pooler + a fresh classifier. AdamW
at 2e-5 with warm-up (the BERT paper's fine-tuning rate, section 4; cosine decay here where the
paper decays linearly). Re-running with the same workdir resumes. Afterwards: ``tfm classify --workdir
workdirs/bert_reviews "a gripping film"``, or ``tfm export --workdir workdirs/bert_reviews --out
DIR`` for transformers' BertForSequenceClassification.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.dataset = "classification_file"
    config.data.classification_file = ""  # required: --config.data.classification_file=PATH
    config.data.valid_fraction = 0.1
    config.data.tokenizer = "pretrained"
    config.data.max_len = 128
    config.data.max_target_len = 128
    config.data.batch_size = 32
    config.data.eval_batch_size = 64

    # Replaced by the imported model's architecture (train.init_from); set so that the config
    # validates before the import.
    config.model.arch = "encoder_classifier"
    config.model.max_len = 512
    config.model.dropout_rate = 0.1
    config.model.attention_dropout_rate = 0.1

    config.train.init_from = ""  # required: --config.train.init_from=DIR
    config.train.num_steps = 1000
    config.train.optimizer = "adamw"
    config.train.schedule = "warmup_cosine"
    config.train.learning_rate = 2e-5
    config.train.warmup_steps = 100
    config.train.weight_decay = 0.01
    config.train.grad_clip_norm = 1.0
    config.train.label_smoothing = 0.0
    config.train.eval_every_steps = 200
    config.train.checkpoint_every_steps = 200
    config.train.eval_decode_examples = 0
    return config
