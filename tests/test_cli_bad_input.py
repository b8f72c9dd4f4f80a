"""Bad input through the command line: each case ends in exactly one `losslab: error:` line and exit 2,
names the offending input, and creates nothing."""
import os

import pytest

from losslab.cli.main import main


def _cases(tmp):
    afile = tmp / "afile"
    afile.write_text("x")
    empty = tmp / "empty.pt"
    empty.write_bytes(b"")
    return [
        (["train", "--dataset", "digits", "--threads", "0"], "threads must be >= 1"),
        (["train", "--dataset", "digits", "--threads", "-1"], "threads must be >= 1"),
        (["train", "--dataset", "digits", "--device", "bogus"], "unknown device 'bogus'"),
        (["train", "--dataset", "digits", "--device", "cuda:99"], "device 'cuda:99'"),
        (["train", "--dataset", "digits", "--out", str(afile)], f"{afile}"),
        (["evaluate", str(empty), "--model", "mlp", "--dataset", "digits"], "empty or truncated"),
        (["reproduce", "A1", "--seed", "-1", "--out", str(tmp / "r")], "--seed must be >= 0"),
    ]


@pytest.mark.parametrize("i", range(7))
def test_bad_input_is_one_line_and_exit_2(i, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, needle = _cases(tmp_path)[i]
    before = set(os.listdir(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("losslab: error: ") and err.count("\n") == 1, err
    assert needle in err
    assert set(os.listdir(tmp_path)) == before  # nothing created
