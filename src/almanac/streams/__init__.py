"""Stream backends (`almanac.ports.stream.StreamReader`): Kafka and Redis Streams. The
ingestion worker that drives them is `almanac.ingest.stream`."""
