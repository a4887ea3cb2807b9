"""rag: see ARCHITECTURE in the README."""
