"""Metrics: answers, explanations, grounding, words, fluency, the judge, multiple choice, benchmarks."""
