"""`almanac report --out report.html`: the data-quality report as one self-contained
HTML page (see `almanac.quality.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from almanac.cli.app import app, console, open_store
from almanac.errors import InputError

_START = typer.Option(
    "--start", help="Earliest event time of the statistics, read time of the skew (ISO 8601)."
)
_END = typer.Option(
    "--end", help="Latest event time of the statistics, read time of the skew (ISO 8601)."
)


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    return names or None


@app.command()
def report(
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")],
    views: Annotated[
        str | None, typer.Option("--views", help="Views, comma-separated (default: all).")
    ] = None,
    start: Annotated[str | None, _START] = None,
    end: Annotated[str | None, _END] = None,
    reference: Annotated[
        str | None, typer.Option("--reference", help="The drift reference window START..END.")
    ] = None,
    current: Annotated[
        str | None, typer.Option("--current", help="The drift current window START..END.")
    ] = None,
    reference_dataset: Annotated[
        str | None,
        typer.Option("--reference-dataset", help="A saved dataset as the drift reference."),
    ] = None,
    step: Annotated[
        str, typer.Option("--step", help="The step of PSI over the current window.")
    ] = "1d",
    services: Annotated[
        str | None,
        typer.Option("--services", help="Feature services, comma-separated (default: all)."),
    ] = None,
) -> None:
    """Write one self-contained HTML page on the repo's data quality: statistics and
    histograms per view, drift (with --reference and --current), freshness, skew."""
    from almanac.quality.checks import parse_window, sample

    before = None
    if reference is not None or reference_dataset is not None:
        before = sample(reference, reference_dataset, "--reference / --reference-dataset")
    after = None if current is None else parse_window(current, "--current")
    if (before is None) != (after is None):
        raise InputError("--reference (or --reference-dataset) and --current go together: drift compares the two")  # fmt: skip
    if out.is_dir() or not out.parent.is_dir():
        raise InputError(f"--out: '{out}' is a folder or its folder does not exist")
    with open_store() as store:
        page = store.report(
            _names(views), start=start, end=end, reference=before, current=after,
            step=step, services=_names(services),
        )  # fmt: skip
    temp = out.with_name(f".{out.name}.tmp")
    temp.write_text(page.html, encoding="utf-8")
    temp.replace(out)  # a reader never sees half a page
    console.print(f"{out}: {page.summary()}", highlight=False, soft_wrap=True)
