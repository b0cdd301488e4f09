"""The pure model and data core of the labeling assistant (MKT tagger, benchmark world, selection)."""
