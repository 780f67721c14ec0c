"""Product files: atomic writes, resumable row logs, manifests that never hold secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlkd_bench.products import Manifest, RowLog, atomic_path, redact_argv, render_card, write_jsonl


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"id": 1}])
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("interrupted")
    assert target.read_text() == '{"id": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind


def test_atomic_write_survives_sigkill(tmp_path: Path) -> None:
    """A writer killed mid-file leaves the previous complete file, never a half one."""
    target = tmp_path / "big.jsonl"
    write_jsonl(target, [{"id": 0}])
    code = (
        "import os, signal, sys\n"
        "from rlkd_bench.products import write_jsonl\n"
        "def rows():\n"
        "    for i in range(100000):\n"
        "        if i == 50000: os.kill(os.getpid(), signal.SIGKILL)\n"
        "        yield {'id': i, 'pad': 'x' * 50}\n"
        f"write_jsonl({str(target)!r}, rows())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    assert target.read_text() == '{"id": 0}\n'


def test_rowlog_resume_drops_torn_tail_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a", "v": 1}\n{"id": "a", "v": 2}\n{"id": "b", "v": 3}\n{"id": "c", "v"')
    with RowLog(path) as log:
        assert log.done == {"a", "b"}
        log.append({"id": "b", "v": 99})  # already there: ignored
        log.append({"id": "c", "v": 4})
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert rows == [{"id": "a", "v": 1}, {"id": "b", "v": 3}, {"id": "c", "v": 4}]


def test_manifest_and_card_hide_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["rlkd-bench", "build-gsrm-data", "--api-key", "sk-SECRET123",
                                      "--token=hf_SECRET456", "sk-LOOSE789"])
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": 1}\n')
    m = Manifest(product="demo")
    m.add_input("traces", str(data))
    m.counts = {"ok": 1}
    m.write(tmp_path)
    card = render_card(m.to_dict(), title="Demo", summary="A demo.")
    blob = (tmp_path / "manifest.json").read_text() + card
    for secret in ("SECRET123", "SECRET456", "LOOSE789"):
        assert secret not in blob
    assert m.inputs["traces"]["sha256"] and "- ok: 1" in card
    assert redact_argv(["--api-key", "k", "--out", "x"]) == ["--api-key", "***", "--out", "x"]


def test_rowlog_is_append_only_while_open(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    log = RowLog(path)
    log.append({"id": "x"})
    # another reader sees the row before close (flushed line by line)
    assert path.read_text() == '{"id": "x"}\n'
    log.close()
    assert os.path.getsize(path) > 0
