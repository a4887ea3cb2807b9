"""One router module per resource; HTTP only, logic lives in the services they call."""
