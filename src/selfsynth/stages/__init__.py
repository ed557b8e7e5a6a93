"""Stages of the loop: describe, select, synthesize, finetune, sample, evaluate."""
