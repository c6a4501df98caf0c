"""The built-in Hydra configs, installed as the package ``sesemi.configs`` (see pyproject.toml).

Every composition of them loads this package first (``@hydra.main(config_path="pkg://sesemi.configs")``,
``initialize_config_module("sesemi.configs")``), so it registers here what the YAML files pull in but do not hold:
the loss heads' config nodes (group ``method/loss_head``, made by :mod:`sesemi.head_configs` from the heads' source).
"""

from sesemi import head_configs

head_configs.register()
