"""Screening: ensemble prediction with fine-tuned property models and ranking of candidates."""
