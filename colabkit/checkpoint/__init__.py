"""Checkpoints: the file format, when to save and what to keep, and the manager that runs them.

``format`` (one verifiable zip per save), ``policy`` (pure save/keep policies) and ``manager``
(background writing to local staging, mirroring to a store, pruning, resume). Importing this
package never imports keras or tensorflow.
"""

from __future__ import annotations
