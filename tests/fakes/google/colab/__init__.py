"""A fake ``google.colab`` package for tests: only ``drive`` is provided."""
