"""The embedded stack: object store, Ray head and the Serve application under one supervisor."""
