"""Retrieval augmentation: the dense CLIP retriever, its training on Shapes and its import from Hugging Face."""
