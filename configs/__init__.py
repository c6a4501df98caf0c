# The built-in Hydra configs, installed as the package ``sesemi.configs`` (see pyproject.toml).
