"""`almanac report`: the page is built from a repo with a planted shift and a planted skew,
then opened in a real headless Chromium (Debian's, driven by playwright), which must find
every chart and table, load nothing from the network, and take a screenshot."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from test_quality_commands import store, weeks  # the payments repo: amounts shift in week 2
from test_skew import FEATURES as PROFILE_FEATURES
from test_skew import serve  # a served `ranker` service with a planted skew

from almanac import FeatureStore
from almanac.cli import main
from almanac.quality.drift import DRIFT_PSI, WARN_PSI
from almanac.quality.report import render

__all__ = ["store"]  # a fixture
CHROMIUM = Path("/usr/bin/chromium")
PLANTED = [0, 33, 66, 99, 132, 165]  # 3% of test_skew's users


def run(*args: str) -> int:
    """`almanac ARGS`: its exit code (what it prints is captured by capsys)."""
    try:
        main(list(args))
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    return 0


def window(a: int, b: int) -> str:
    start, end = weeks(a, b)
    return f"{start.isoformat()}..{end.isoformat()}"


@pytest.fixture
def repo(store: FeatureStore) -> Path:
    """The payments repo plus test_skew's `profile` view and `ranker` service, whose
    reads were served (and logged) with a planted skew."""
    root = store.repo_path
    (root / "data" / "profile").mkdir()
    (root / "features.py").write_text((root / "features.py").read_text() + PROFILE_FEATURES)
    (root / "almanac.yaml").write_text("project: quality\nserver:\n  log_sample_rate: {rate}\n")
    serve(root, 1.0, PLANTED).close()
    return root


def test_psi_over_time_is_drifts_psi_of_each_step(store: FeatureStore) -> None:
    page = render(store, views=["payments"], reference=weeks(0, 1), current=weeks(1, 3))
    (view,) = page.views
    assert len(view.steps) == 14 and view.steps[0] == weeks(1, 2)[0]
    for day in (0, 2, 7, 11):
        start = view.steps[day]
        alone = (start, start + timedelta(days=1) - timedelta(microseconds=1))
        expected = {d.feature: d.psi for d in store.drift("payments", weeks(0, 1), alone)}
        for feature in ("amount", "plan"):
            assert view.psi[feature][day] == pytest.approx(expected[feature], rel=1e-9, abs=1e-12)
    amount = view.psi["amount"]
    assert amount[6] is None and amount[13] is None  # the 7th day of each week has no rows
    assert all(v is not None and v < WARN_PSI for v in amount[:6])
    assert all(v is not None and v > DRIFT_PSI for v in amount[7:13])
    assert all(v is not None and v < WARN_PSI for v in view.psi["plan"] if v is not None)
    assert {d.feature: d.status for d in view.drift} == {"amount": "drift", "plan": "ok"}


def test_a_saved_training_set_as_the_reference(store: FeatureStore) -> None:
    import pyarrow as pa

    spine = pa.table({"user_id": list(range(500)), "event_timestamp": [weeks(0, 1)[1]] * 500})
    store.get_historical_features(spine, ["payments:amount", "payments:plan"], save_as="base")
    page = render(store, views=["payments"], reference="base", current=weeks(1, 3))
    (view,) = page.views
    assert [d.to_dict() for d in view.drift] == [d.to_dict() for d in store.drift("payments", "base", weeks(1, 3))]  # fmt: skip
    assert page.options["reference"] == "saved dataset base" and len(view.steps) == 14
    assert set(view.overlays) == {"amount", "plan"}


def test_values_are_escaped(store: FeatureStore) -> None:
    odd = '<img src=x onerror="alert(1)">'
    store.write_to_offline_store("payments", {
        "user_id": [1], "event_timestamp": [weeks(0, 1)[0]], "amount": [5.0], "plan": [odd]})  # fmt: skip
    html = render(store, views=["payments"], reference=weeks(0, 1), current=weeks(1, 3)).html
    assert odd not in html and "<img" not in html
    assert html.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;") >= 2  # top values, overlay


def test_the_page_in_a_real_browser(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    code = run("--repo", str(repo), "report", "--out", str(out), "--reference", window(0, 1),
                  "--current", window(1, 3))  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert str(out) in printed and "drift in 1 feature (payments:amount)" in printed
    assert "skew in 1 of 1 logged service" in printed
    html = out.read_text()
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # fmt: skip

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    shot = tmp_path / "report.png"
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(out.as_uri(), wait_until="load")
            page.screenshot(path=str(shot), full_page=True)

            def count(selector: str) -> int:
                return page.locator(selector).count()

            def text(selector: str) -> str:
                return page.locator(selector).inner_text().strip()

            assert page.title() == "Data quality: quality"
            assert count("nav a") == 4  # freshness, two views, skew
            for view, features in (("payments", ("amount", "plan")), ("profile", ("score", "tier"))):  # fmt: skip
                for feature in features:
                    chart = f'section[data-view="{view}"] svg.histogram[data-feature="{feature}"]'
                    assert count(f"{chart} rect.bar") > 0, chart
            payments = 'section[data-view="payments"]'
            for side in ("reference", "current"):
                assert count(f'{payments} svg.overlay[data-feature="amount"] rect.bar.{side}') > 0
                assert count(f'{payments} svg.overlay[data-feature="plan"] rect.bar.{side}') > 0
            drift = f'{payments} table.drift tr[data-feature="{{}}"] td.status'
            assert text(drift.format("amount")) == "drift"
            assert text(drift.format("plan")) == "ok"
            red = page.eval_on_selector(drift.format("amount"), "e => getComputedStyle(e).backgroundColor")  # fmt: skip
            assert red == "rgb(255, 235, 233)"  # the stylesheet is applied
            lines = f"{payments} svg.drift-over-time polyline.series"
            assert count(lines) == 2
            names = page.eval_on_selector_all(lines, "es => es.map(e => e.dataset.feature)")
            assert sorted(names) == ["amount", "plan"]
            dashed = page.eval_on_selector_all(
                f"{payments} svg.drift-over-time line.threshold",
                "es => es.map(e => e.getAttribute('stroke-dasharray'))",
            )
            assert len(dashed) == 2 and all(dashed)
            assert count("#freshness tbody tr") == 2
            views = page.eval_on_selector_all("#freshness tbody tr", "es => es.map(e => e.dataset.view)")  # fmt: skip
            assert sorted(views) == ["payments", "profile"]
            ranker = '#skew [data-service="ranker"]'
            assert count(f"{ranker} svg.skew-bars rect.bar") == 2
            assert text(f'{ranker} table.skew tr[data-feature="score"] td.status') == "3.00%"
            assert text(f'{ranker} table.skew tr[data-feature="tier"] td.status') == "0.00%"
        finally:
            browser.close()
    assert requests == [out.as_uri()]  # nothing but the file itself
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_bad_input_exits_2_with_a_message_and_writes_nothing(
    store: FeatureStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    base = ("--repo", str(store.repo_path), "report", "--out", str(out))
    cases = [
        (
            ("--reference", "2024-03-01", "--current", ".."),
            "--reference / --reference-dataset: expected START..END",
        ),
        (("--views", "payments,nope"), "unknown feature view 'nope'"),
        (("--services", "nope"), "unknown feature service 'nope'"),
        (
            ("--reference", window(0, 1)),
            "--reference (or --reference-dataset) and --current go together",
        ),
        (("--reference", window(0, 1), "--current", window(1, 3), "--step", "soon"), "step:"),
        (("--reference", window(0, 1), "--current", window(1, 3), "--step", "1s"), "at most 500"),
        (("--start", "2024-03-09", "--end", "2024-03-01"), "is after end"),
        (("--reference-dataset", "nope", "--current", ".."), "unknown dataset 'nope'"),
    ]
    for args, message in cases:
        capsys.readouterr()
        code = run(*base, *args)
        err = " ".join(capsys.readouterr().err.split())
        assert code == 2 and message in err, (args, err)
        assert "Traceback" not in err
        assert not out.exists()
    code = run("--repo", str(store.repo_path), "report", "--out", str(tmp_path / "no" / "r.html"))  # fmt: skip
    assert code == 2 and "its folder does not exist" in capsys.readouterr().err
