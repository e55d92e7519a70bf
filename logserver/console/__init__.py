"""The web console: static pages shipped in static/, and the ring of samples its charts read."""
