"""HTTP: the composition root (`app.create_app`), dependencies, errors, one router per resource."""
