"""Input→output maps of a text-to-image model (``bendbridge analyse``): figures and numbers."""
