"""The default configuration, shipped inside the package as ``regimes.config.defaults``.

The YAML files beside this one stay where DESIGN.md puts them (``config/`` at the repo
root); ``pyproject.toml`` maps this folder into the package so that a wheel carries them
too. Find them with :func:`regimes.config.loading.default_config_dir`, never by a path
relative to a source file.
"""
