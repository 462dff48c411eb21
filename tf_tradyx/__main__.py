"""`python -m tf_tradyx`: what the package installs and how to run it."""

import sys

from tf_tradyx import _keras_compat, cli
from tf_tradyx._version import __version__


def main():
    _keras_compat.print_msg(f"tf_tradyx {__version__}\n" + cli.__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
