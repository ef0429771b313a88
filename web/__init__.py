"""Pages for people: the same projections as the API, rendered as HTML."""
