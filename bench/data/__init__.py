"""Preparing real datasets from their official files (`preparation`) and describing datasets (`datacard`)."""
