"""Expert concept sources: where each class's visual concepts come from."""
