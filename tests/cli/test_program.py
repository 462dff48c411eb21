"""tf_tradyx.cli._program, what the console programs share: --help lists the program's own flags
under its docstring, a user error once running is one line `<program>: error: <message>` (exit
status 1), flag checks name the flag and the bound, the run's input files are found among the
flags, and the fine-tuning pipelines shuffle, flip and cache the training split only."""

import sys
import types

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tf_tradyx.cli import _program
from tf_tradyx.data.datasets import DatasetUnavailableError

FLAGS = flags.FLAGS
PROGRAM = "fake_program"  # the module the test flags belong to, as a program's module
DOC = "Trains a fake network.\n\nRuns offline; `fake-prog --helpshort` lists its flags."


@pytest.fixture
def program(monkeypatch):
    """A program module with its own flags in absl's global FLAGS (removed afterwards), as
    tf_tradyx/cli/prune_at_init.py defines its flags."""
    module = types.ModuleType(PROGRAM, DOC)
    monkeypatch.setitem(sys.modules, PROGRAM, module)
    flags.DEFINE_integer("fake_epochs", 2, "How many epochs.", module_name=PROGRAM)
    flags.DEFINE_integer(
        "fake_rounds", None, "Pruning rounds (unset: the method's).", module_name=PROGRAM
    )
    flags.DEFINE_string("fake_ranking", "", "A ranking.json to read.", module_name=PROGRAM)
    flags.DEFINE_list("fake_inputs", [], "Files to read.", module_name=PROGRAM)
    flags.DEFINE_string("fake_out", "runs/fake", "Output folder.", module_name=PROGRAM)
    names = ["fake_epochs", "fake_rounds", "fake_ranking", "fake_inputs", "fake_out"]
    yield module
    for name in names:
        delattr(FLAGS, name)


def _start(monkeypatch, main, *args):
    """Runs `_program.start(main, PROGRAM)` as `fake-prog <args>`; returns SystemExit's code."""
    monkeypatch.setattr(sys, "argv", ["/usr/bin/fake-prog", *args])
    with pytest.raises(SystemExit) as exit_:
        _program.start(main, PROGRAM)
    return exit_.value.code


@pytest.mark.parametrize("flag", ["--help", "--helpshort", "-h", "-?"])
def test_help_prints_the_programs_docstring_and_only_its_own_flags(
    program, monkeypatch, capsys, flag
):
    called = []
    code = _start(monkeypatch, called.append, "--fake_epochs=3", flag)
    out = capsys.readouterr().out
    assert code == 0 and not called  # help only: main never runs
    assert out.startswith(DOC + "\n\nflags:\n")
    for name, text in [("fake_epochs", "How many epochs."), ("fake_out", "Output folder.")]:
        assert f"--{name}: {text}" in out
    # absl lists the __main__ module's flags, and its own; the program's help holds neither.
    assert "--flagfile" not in out and "run_with_pdb" not in out and "helpfull" not in out


def test_start_runs_main_under_absl_with_parsed_flags(program, monkeypatch):
    seen = []

    def main(argv):
        seen.append((argv[1:], FLAGS.fake_epochs, FLAGS.fake_out))

    assert _start(monkeypatch, main, "--fake_epochs=5", "--fake_out=o", "extra") in (None, 0)
    assert seen == [(["extra"], 5, "o")]


@pytest.mark.parametrize(
    "error,message",
    [
        (
            ValueError("budget 3 is below\n   the cheapest channel (40 units)"),
            "budget 3 is below the cheapest channel (40 units)",
        ),
        (FileNotFoundError("data/missing does not exist"), "data/missing does not exist"),
        (DatasetUnavailableError("no dataset 'cifar11'"), "no dataset 'cifar11'"),
        (ValueError(), "ValueError"),  # no message: the error's kind
    ],
)
def test_a_user_error_is_one_line_naming_the_program(program, monkeypatch, error, message):
    def main(argv):
        raise error

    monkeypatch.delenv("TF_TRADYX_TRACEBACK", raising=False)
    # sys.exit(<str>): Python prints the string to stderr and exits with status 1.
    assert _start(monkeypatch, main) == f"fake-prog: error: {message}"


def test_a_traceback_on_request_and_for_anything_but_a_user_error(program, monkeypatch):
    def user_error(argv):
        raise ValueError("bad value")

    def bug(argv):
        raise KeyError("a bug")

    monkeypatch.delenv("TF_TRADYX_TRACEBACK", raising=False)
    run = _program._one_line_errors(bug)
    with pytest.raises(KeyError, match="a bug"):
        run(["fake-prog"])
    monkeypatch.setenv("TF_TRADYX_TRACEBACK", "1")
    with pytest.raises(ValueError, match="bad value"):
        _program._one_line_errors(user_error)(["fake-prog"])
    assert _program._one_line_errors(lambda argv: 7)(["fake-prog"]) == 7  # main's result kept


@pytest.mark.parametrize(
    "n,noun,text",
    [
        (1, "epoch", "1 epoch"),
        (8, "epoch", "8 epochs"),
        (0, "round", "0 rounds"),
        (12345, "step", "12,345 steps"),
    ],
)
def test_count(n, noun, text):
    assert _program.count(n, noun) == text


def test_require_at_least_names_the_flag_and_the_bound(program):
    _program.require_at_least(1, "fake_epochs")
    _program.require_at_least(1, "fake_rounds", unset_ok=True)
    FLAGS.fake_epochs = 1  # the bound itself is accepted
    with pytest.raises(flags.IllegalFlagValueError, match=r"--fake_epochs must be >= 1\."):
        FLAGS.fake_epochs = 0
    FLAGS.fake_rounds = None  # unset: the method's default
    FLAGS.fake_rounds = 4
    with pytest.raises(
        flags.IllegalFlagValueError, match=r"--fake_rounds must be >= 1 \(or unset\)\."
    ):
        FLAGS.fake_rounds = 0


def test_require_at_least_checks_every_named_flag_with_its_own_bound(program):
    _program.require_at_least(0, "fake_epochs", "fake_rounds")
    _program.require_at_least(3, "fake_rounds")  # a second, stricter check on one flag
    FLAGS.fake_epochs = 0
    with pytest.raises(flags.IllegalFlagValueError, match=r": --fake_epochs must be >= 0\.$"):
        FLAGS.fake_epochs = -1
    FLAGS.fake_rounds = 3
    with pytest.raises(flags.IllegalFlagValueError, match=r": --fake_rounds must be >= 3\.$"):
        FLAGS.fake_rounds = 2
    with pytest.raises(flags.IllegalFlagValueError, match=r": --fake_rounds must be >= 0\.$"):
        FLAGS.fake_rounds = -1


def test_named_files_are_the_flags_naming_existing_files(program, tmp_path):
    ranking, weights = tmp_path / "ranking.json", tmp_path / "weights.npz"
    for path in (ranking, weights):
        path.write_text("{}")
    FLAGS.fake_ranking = str(ranking)
    FLAGS.fake_inputs = [str(tmp_path / "missing.npz"), str(weights)]  # an item of a list flag
    FLAGS.fake_out = str(tmp_path)  # a folder, not a file
    named = {k: v for k, v in _program.named_files().items() if k.startswith("--fake_")}
    assert named == {"--fake_ranking": str(ranking), "--fake_inputs": str(weights)}
    FLAGS.fake_ranking, FLAGS.fake_inputs = "", []
    assert not any(k.startswith("--fake_") for k in _program.named_files())


@pytest.mark.parametrize(
    "value,readable",
    [
        ("27946", True),
        ("109KiB", True),
        ("2MB", True),
        ("0", False),
        ("lots", False),
        ("-5", False),
        ("", False),
    ],
)
def test_budget_is_readable(value, readable):
    assert _program.budget_is_readable(value) is readable


def test_fine_tuning_data_shuffles_flips_and_caches_the_training_split_only():
    """Example i: a 2x3 image whose rows are not symmetric, label i; reads are counted."""
    reads = {"train": 0, "test": 0}
    images = np.arange(10 * 2 * 3 * 1, dtype=np.uint8).reshape(10, 2, 3, 1) * 3

    def split(name):
        def examples():
            for i, image in enumerate(images):
                reads[name] += 1
                yield image, i

        signature = (tf.TensorSpec((2, 3, 1), tf.uint8), tf.TensorSpec((), tf.int64))
        return tf.data.Dataset.from_generator(examples, output_signature=signature)

    def preprocess(x):
        return tf.cast(x, tf.float32) / 255.0

    train, test = _program.fine_tuning_data(
        split("train"), split("test"), preprocess, batch_size=4, seed=0, test_batch_size=3
    )
    epochs = [[(x.numpy(), y.numpy()) for x, y in train] for _ in range(2)]
    assert reads["train"] == 10  # the second epoch reads the cache
    flipped = unflipped = 0
    for batches in epochs:
        assert [len(y) for _, y in batches] == [4, 4, 2]
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        assert sorted(y) == list(range(10)) and list(y) != list(range(10))  # shuffled
        for image, label in zip(x, y):
            original = images[label] / np.float32(255)
            mirrored = original[:, ::-1]
            if np.array_equal(image, original):
                unflipped += 1
            else:
                np.testing.assert_array_equal(image, mirrored)
                flipped += 1
    assert flipped and unflipped
    orders = [[int(v) for _, y in batches for v in y] for batches in epochs]
    assert orders[0] != orders[1]  # reshuffled each epoch
    for _ in range(2):
        batches = [(x.numpy(), y.numpy()) for x, y in test]
        assert [len(y) for _, y in batches] == [3, 3, 3, 1]
        np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), np.arange(10))
        np.testing.assert_array_equal(
            np.concatenate([b[0] for b in batches]), images / np.float32(255)
        )
    assert reads["test"] == 10  # cached too, never augmented or shuffled


def test_fine_tuning_data_repeats_for_a_seed():
    def split():
        x = np.arange(16 * 2 * 2 * 1, dtype=np.uint8).reshape(16, 2, 2, 1)
        return tf.data.Dataset.from_tensor_slices((x, np.arange(16)))

    def labels(seed):
        tf.random.set_seed(0)
        train, _ = _program.fine_tuning_data(split(), split(), None, 16, seed, 16)
        return [int(v) for _, y in train for v in y]

    assert labels(3) == labels(3) != labels(4)


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
