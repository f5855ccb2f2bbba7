"""dagnn_cli: the ``dagnn`` command."""
