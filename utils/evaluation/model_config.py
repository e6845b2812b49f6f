"""The model config checked against the data before a model is built: train.py, evaluate.py and
DialogRanker read it through here."""
from dataloader.feature_record import NUM_CLASSES
from models import BertConfig
from options import SharedOptions


def model_config_for(options: SharedOptions, dataset) -> BertConfig:
    """-model_config, checked against the data the model will see (a dataset of
    dataloader/datasets.py): its vocabulary, -max_seq_len and, for ViLBERT, the feature store's
    width and classes; UserError naming the config and the data file otherwise."""
    return checked_model_config(options.model_config, options.model_type, dataset.vocabulary_size, options.vocab,
                                options.max_seq_len, dataset.features)


def checked_model_config(model_config, model_type: str, vocabulary_size: int, vocab, max_seq_len: int,
                         features=None) -> BertConfig:
    """The model config at `model_config`, checked against the vocabulary `vocab` (of
    `vocabulary_size` ids), `max_seq_len` and, for ViLBERT, the feature store `features` (an
    open reader of dataloader/feature_store.py; None: no store to check against)."""
    config = BertConfig.from_json_file(model_config)
    image = {}
    if model_type == "vilbert" and features is not None:
        image = dict(feature_size=features.feature_size, features=str(features.path), num_classes=NUM_CLASSES)
    config.check_fits_data(vocabulary_size, str(vocab), max_seq_len, **image)
    return config
