"""What every feature stands on: settings, database, object store, keys, errors, small host helpers."""
