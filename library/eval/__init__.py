"""Evaluation without a network: a synthetic shapes world (shapes_data) and a scorer that
reads shape, colour and position back from pixels (shapes_score)."""
