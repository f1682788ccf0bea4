"""Command modules behind ``brorl COMMAND``: each has ``HELP``, ``add_arguments(parser)`` and ``run(args)``."""
