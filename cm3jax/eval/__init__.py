"""Scoring trained models on the Shapes world."""
