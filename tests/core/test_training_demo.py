"""The demo landing page links every ``OUT/*/report.html`` (the core demo itself runs in ``make demo``)."""

from __future__ import annotations

from dualsci.demo import main


def test_index_only_links_every_report_present(tmp_path):
    for app in ("core", "weather"):
        (tmp_path / app).mkdir()
        (tmp_path / app / "report.html").write_text("<html></html>")
    (tmp_path / "echo").mkdir()  # a demo that wrote no report is not linked
    main(["--out", str(tmp_path), "--index-only"])
    page = (tmp_path / "index.html").read_text()
    assert 'href="core/report.html"' in page and 'href="weather/report.html"' in page
    assert "echo" not in page
