"""What the three programs share: starting under absl with useful --help, and flag checks."""

import sys

from absl import app, flags

from tf_tradyx.sparse_update import costs


def start(main, module_name):
    """Runs `main` under absl. `--help`/`--helpshort` print the program's own flags: absl lists the
    main module's, which for an installed script is the small launcher pip writes."""
    if any(arg in ("--help", "--helpshort", "-h", "-?") for arg in sys.argv[1:]):
        module = sys.modules[module_name]
        print(module.__doc__.strip() + "\n\nflags:\n" + flags.FLAGS.module_help(module))
        sys.exit(0)
    app.run(main)


def budget_is_readable(value):
    """Flag validator: a positive budget in units or bytes ("27946", "109KiB")."""
    try:
        return costs.parse_budget(value) > 0
    except ValueError:
        return False
