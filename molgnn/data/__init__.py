"""Records, readers, sources, ingest, splits and stores."""
