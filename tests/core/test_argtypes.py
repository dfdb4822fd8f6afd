"""dualsci.argtypes: argparse value types that turn bad option values into one-line usage errors (exit 2)."""

import argparse

import pytest

from dualsci.argtypes import nonnegative_float, nonnegative_int, port_number, positive_int, probability


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tool")
    p.add_argument("--n", type=positive_int)
    p.add_argument("--seed", type=nonnegative_int)
    p.add_argument("--port", type=port_number)
    p.add_argument("--weight", type=nonnegative_float)
    p.add_argument("--share", type=probability)
    return p


def test_good_values_parse_to_numbers():
    a = _parser().parse_args(["--n", "3", "--seed", "0", "--port", "65535", "--weight", "0.5"])
    assert (a.n, a.seed, a.port, a.weight) == (3, 0, 65535, 0.5)
    assert _parser().parse_args(["--share", "1"]).share == 1.0


@pytest.mark.parametrize("argv, message", [
    (["--n", "0"], "argument --n: must be >= 1, got 0"),
    (["--n", "2.5"], "argument --n: expected an integer >= 1, got '2.5'"),
    (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
    (["--port", "70000"], "argument --port: must be in [0, 65535], got 70000"),
    (["--weight", "nan"], "argument --weight: must be a finite number >= 0, got nan"),
    (["--weight", "-0.1"], "argument --weight: must be a finite number >= 0, got -0.1"),
    (["--weight", "x"], "argument --weight: expected a number >= 0, got 'x'"),
    (["--share", "1.5"], "argument --share: must be in [0, 1], got 1.5"),
    (["--share", "nan"], "argument --share: must be in [0, 1], got nan"),
    (["--share", "x"], "argument --share: expected a number in [0, 1], got 'x'"),
])
def test_bad_values_are_usage_errors_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err, err
