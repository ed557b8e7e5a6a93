"""The model backend (the Backend protocol, its engines, the Hugging Face implementation) and the text encoder."""
