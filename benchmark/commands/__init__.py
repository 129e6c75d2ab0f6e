"""The ``rtb`` subcommands, one module per command.

Each module holds only argument parsing and printing, and imports the
library modules it drives on use, so ``rtb --help`` and every
``rtb COMMAND --help`` start without torch.
"""
