"""The ``nextclick`` command line: argparse only, one thin module per subcommand, each
calling library functions of ``training``, ``service`` or ``loadtest``."""
