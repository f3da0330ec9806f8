"""Exact-resume training for Keras 3: state capture, resumable data order, callbacks, ``fit``.

Imports keras lazily (only when these modules are imported), never at ``import colabkit``.
"""
