"""`python -m tf_tradyx`: what the package installs and how to run it."""

import sys

from tf_tradyx import cli
from tf_tradyx._version import __version__


def main():
    print(f"tf_tradyx {__version__}\n" + cli.__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
