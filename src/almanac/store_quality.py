"""`FeatureStore`'s data-quality verbs, as the `QualityVerbs` mixin it inherits.

Statistics, drift, validation, quarantined rows and recorded results of a view's
offline rows; saved training sets; the skew report, freshness and the HTML report. Each
verb hands its work to `almanac.quality` (imported when used); those that read a view's
offline rows first check the `read_offline` action on its features.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from almanac.ports.handles import StoreHandle
    from almanac.quality.checks import Quarantine, Validation
    from almanac.quality.datasets import SavedDataset
    from almanac.quality.drift import FeatureDrift
    from almanac.quality.freshness import ViewFreshness
    from almanac.quality.report import Report
    from almanac.quality.results import Results
    from almanac.quality.served import Served
    from almanac.quality.skew import SkewReport
    from almanac.quality.statistics import FeatureStatistics
    from almanac.security.operations import OperationGuard

    class _Store(StoreHandle, Protocol):
        """What these verbs use of `FeatureStore`: its handles, and its access guard."""

        @property
        def _guard(self) -> OperationGuard: ...


class QualityVerbs:
    """The data-quality verbs of `FeatureStore` (which is the only class to inherit
    them: `self` is a `FeatureStore`)."""

    def statistics(
        self: _Store,
        view: str,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
    ) -> list[FeatureStatistics]:
        """Statistics of each feature of `view` over its offline rows with event times
        in [start, end] (see `almanac.quality.statistics`)."""
        from almanac.quality.checks import statistics

        with _reading_offline(self, "statistics", view):
            return statistics(self, view, start, end)

    def drift(
        self: _Store,
        view: str,
        reference: tuple[datetime | str | None, datetime | str | None] | str | Served,
        current: tuple[datetime | str | None, datetime | str | None] | str | Served,
    ) -> list[FeatureDrift]:
        """PSI, Jensen–Shannon and KS of each feature of `view` from the `reference`
        sample to the `current` one, with a status (see `almanac.quality.drift`). A
        sample is a window (start, end) of the view's offline rows, the name of a saved
        dataset (`get_historical_features(..., save_as=...)`), or
        `almanac.quality.served.Served(start, end)`: the values the serving log holds."""
        from almanac.quality.checks import feature_drift

        with _reading_offline(self, "drift", view):
            return feature_drift(self, view, reference, current)

    def datasets(self: _Store) -> list[SavedDataset]:
        """The saved training sets, newest first."""
        from almanac.quality.datasets import listed

        return listed(self.config)

    def dataset(self: _Store, name: str) -> SavedDataset:
        """A saved training set: its features, registry version, statistics, and
        `.read()` for its rows."""
        from almanac.quality.datasets import load

        return load(self.config, name)

    def validate(
        self: _Store,
        view: str,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
    ) -> Validation:
        """`view`'s expectations over its offline rows with event times in [start, end]."""
        from almanac.quality.checks import validate

        with _reading_offline(self, "validate", view):
            return validate(self, view, start, end)

    def skew(
        self: _Store,
        feature_service: str,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
    ) -> SkewReport:
        """The logged online reads of a feature service (`server.log_sample_rate`)
        replayed offline at their read times, compared value by value (see
        `almanac.quality.skew`)."""
        from almanac.quality.skew import skew

        return skew(self, feature_service, start, end)

    def results(
        self: _Store, view: str | None = None, since: datetime | None = None, failed: bool = False
    ) -> Results:
        """The recorded results of expectations (`.rows`, newest first): one per
        expectation per batch checked on every entry path (see `almanac.quality.results`)."""
        from almanac.quality.results import read

        return read(self.config, view, since, failed)

    def report(
        self: _Store,
        views: Sequence[str] | None = None,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        reference: tuple[datetime | str | None, datetime | str | None] | str | Served | None = None,
        current: tuple[datetime | str | None, datetime | str | None] | None = None,
        step: str = "1d",
        services: Sequence[str] | None = None,
    ) -> Report:
        """The data-quality report (`.html`: one self-contained page; see
        `almanac.quality.report`): statistics per view, drift from `reference` (a window
        or a saved dataset) to the `current` window, freshness, and skew per service."""
        from almanac.quality.report import render

        return render(
            self, views, start, end, reference, current, step=step, services=services
        )  # fmt: skip

    def quarantine(self: _Store, view: str) -> Quarantine:
        """The rows `view` kept aside under `on_violation="quarantine"`, newest first,
        each with the expectations it broke."""
        from almanac.quality.checks import quarantined

        with _reading_offline(self, "quarantine", view):
            return quarantined(self, view)

    def freshness(
        self: _Store, views: list[str] | None = None, now: datetime | None = None
    ) -> list[ViewFreshness]:
        """Each view's newest event and materialization lag against its `freshness` SLO
        (see `almanac.quality.freshness`)."""
        from almanac.quality.freshness import freshness

        return freshness(self, views, now)


def _reading_offline(store: _Store, name: str, view: str) -> AbstractContextManager[dict[str, Any]]:  # fmt: skip
    """The `read_offline` check on every feature of `view` (its rows are read)."""
    catalog = store.catalog
    found = catalog.view(view)
    pairs = [(view, f.name) for f in getattr(found, "features", [])]
    return store._guard.operation(catalog, name, ["read_offline"], lambda policy: policy.feature_targets(pairs) or [policy.view_target(view)], view=view)  # fmt: skip
