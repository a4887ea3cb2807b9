"""Serving: builds the Ray Serve application (the API ingress, later the vLLM deployments)."""
