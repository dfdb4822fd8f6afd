"""The demo end to end on a tiny budget (about 12 s on an idle 2-core host)."""

from __future__ import annotations


def test_demo_writes_report(tmp_path):
    from apps.echo.demo import main

    out = tmp_path / "echo"
    assert main(["--out", str(out), "--patients", "12", "--max-time", "00:00:00:40", "--max-steps", "30",
                 "--members", "2", "--steps", "5", "--test-patients", "1"]) == 0
    html = (out / "report.html").read_text()
    assert "Ejection fraction" in html and "segment/" in html and (out / "segment" / "cases.csv").exists()
