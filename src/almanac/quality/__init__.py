"""Data quality: admission at the door (strict columns, expectations and their
policies), the recorded results of every check, statistics, drift, validation of
offline rows, freshness, the serving log and the skew report. Below ingestion and
materialization, which call admission for every batch they take in."""
