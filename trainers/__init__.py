"""trainers: see ARCHITECTURE in the README."""
