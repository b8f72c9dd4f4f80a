"""The ``losslab`` command line: one module a subcommand (see :mod:`losslab.cli.main`)."""
