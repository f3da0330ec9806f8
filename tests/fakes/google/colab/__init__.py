"""A fake ``google.colab`` package for tests: ``drive`` and ``runtime``."""
