"""What the three programs share: starting under absl with useful --help, and flag checks."""

import os
import sys

import tensorflow as tf
from absl import app, flags

from tf_tradyx import _keras_compat
from tf_tradyx.data import preprocessing
from tf_tradyx.data.datasets import DatasetUnavailableError
from tf_tradyx.sparse_update import costs


def start(main, module_name):
    """Runs `main` under absl. `--help`/`--helpshort` print the program's own flags: absl lists the
    main module's, which for an installed script is the small launcher pip writes."""
    if any(arg in ("--help", "--helpshort", "-h", "-?") for arg in sys.argv[1:]):
        module = sys.modules[module_name]
        _keras_compat.print_msg(
            module.__doc__.strip() + "\n\nflags:\n" + flags.FLAGS.module_help(module)
        )
        sys.exit(0)
    app.run(_one_line_errors(main))


# What a bad flag value or input raises once the run has started (a data folder that does not
# exist, an unknown dataset, a budget below the cheapest channel, an unreadable ranking): the
# library's messages name the cause, so the user gets that line, not a traceback.
USER_ERRORS = (ValueError, OSError, DatasetUnavailableError)


def _one_line_errors(main):
    """`main`, with a user error printed as one line `<program>: error: <message>` (exit status
    1). TF_TRADYX_TRACEBACK=1 shows the traceback instead."""

    def run(argv):
        try:
            return main(argv)
        except USER_ERRORS as e:
            if os.environ.get("TF_TRADYX_TRACEBACK"):
                raise
            message = " ".join(str(e).split()) or type(e).__name__
            sys.exit(f"{os.path.basename(sys.argv[0])}: error: {message}")

    return run


def count(n, noun):
    """ "1 epoch", "8 epochs"."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def require_at_least(minimum, *names, unset_ok=False):
    """Registers `--name >= minimum` for each named flag, with one message form; `unset_ok` also
    accepts None (a flag whose default means "all")."""
    for name in names:
        if unset_ok:
            check, suffix = (lambda v, m=minimum: v is None or v >= m), " (or unset)"
        else:
            check, suffix = (lambda v, m=minimum: v >= m), ""
        flags.register_validator(name, check, message=f"--{name} must be >= {minimum}{suffix}.")


def named_files():
    """{"--flag": path} for every flag whose value names an existing file: the run's inputs, which
    its output commit must never remove or overwrite (`--layers_from=out/ranking.json --out=out`
    once lost ranking.json)."""
    named = {}
    for name, value in flags.FLAGS.flag_values_dict().items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item and os.path.isfile(item):
                named[f"--{name}"] = item
    return named


def budget_is_readable(value):
    """Flag validator: a positive budget in units or bytes ("27946", "109KiB")."""
    try:
        return costs.parse_budget(value) > 0
    except ValueError:
        return False


def fine_tuning_data(train, test, preprocess, batch_size, seed, test_batch_size):
    """The fine-tuning programs' pipelines: shuffled, flipped, cached training batches and
    cached test batches, both through the network's `preprocess`."""
    train_ds = preprocessing.prepare(
        train,
        batch_size,
        preprocess=preprocess,
        augment=tf.image.random_flip_left_right,
        shuffle_buffer=10_000,
        seed=seed,
        cache=True,
    )
    return train_ds, preprocessing.prepare(test, test_batch_size, preprocess=preprocess, cache=True)
