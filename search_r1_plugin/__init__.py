"""Search-R1 on stock verl.

Importing this package is cheap and does not import verl: the protocol, the
reward and the retrieval client work on their own (evaluation, the demo).
The verl pieces are registered by :mod:`search_r1_plugin.verl_plugin`, which
verl imports through the ``verl.plugins`` entry point on every ``import verl``.
"""

__version__ = "0.1.0"
