"""The configuration: one tree of typed sections (:mod:`.sections`), built from YAML and overrides (:mod:`.loading`).

>>> cfg = load_config("quickstart", ["train.lr=1e-3"])
>>> cfg.train.lr
0.001
"""

from .loading import config_from_dict, config_to_dict, load_config, replace_config, save_config
from .sections import Config, DataConfig, DecodeConfig, ModelConfig, TokenizerConfig, TrainConfig

__all__ = ["Config", "DataConfig", "DecodeConfig", "ModelConfig", "TokenizerConfig", "TrainConfig",
           "config_from_dict", "config_to_dict", "load_config", "replace_config", "save_config"]
