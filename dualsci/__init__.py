"""dualsci: dual-stream diffusion for science and medicine (the shared core).

Sub-packages: ``dualsci.nn`` (networks), ``dualsci.diffusion`` (noise processes, objectives, samplers),
``dualsci.training`` (Lightning module, CLI, callbacks), ``dualsci.io`` (safe outputs), ``dualsci.argtypes``
(argparse value types for the apps' verbs). The core never imports an app.
"""

__version__ = "0.1.0"
