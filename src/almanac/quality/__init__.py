"""Data quality: statistics, drift and validation of a view's offline rows (admission
at the door is `almanac.ingest.admission`)."""
